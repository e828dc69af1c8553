"""netpol-gen: learn how Kubernetes workloads talk, write least-privilege NetworkPolicies for exactly that.

The distribution maps the repository's top-level folders onto subpackages of ``netpol_gen`` (the list is
in pyproject.toml; the README's Architecture section shows the floors); this file is the root package.
"""

__version__ = "0.1.0"
