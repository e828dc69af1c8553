"""netpol-gen: learn how Kubernetes workloads talk, write least-privilege NetworkPolicies for exactly that.

The distribution maps the repository's top-level folders onto subpackages of ``netpol_gen``
(collector, store, synthesizer, evaluator, cli); this file is the root of that package.
"""

__version__ = "0.1.0"
