"""Names the layers and the command line share (environment variables, the reserved shadow set, the
export targets), in a module that imports nothing: ``netpol-gen --help`` declares its options with them
without loading the store, the HTTP client, the server or the synthesizer that use them."""

ENV_URL = "NETPOL_GEN_DB"  # the store's URL when --db is not given
ENV_TOKEN = "NETPOL_GEN_TOKEN"  # the bearer token of --server
IN_FORCE = "in-force"  # the shadow set of the policies in force; `shadow add` refuses the name
UNKNOWN_SIDE = "unknown"  # the side of an edge only seen unanswered, which the policies in force do not deny
# the policy kinds `export --target` writes (rendered by netpol_gen.synthesizer.targets)
KUBERNETES, CILIUM, CALICO = "kubernetes", "cilium", "calico"
TARGETS = (KUBERNETES, CILIUM, CALICO)
