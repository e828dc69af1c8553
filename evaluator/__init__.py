"""Policy semantics: policy parsing and validation (NetworkPolicy, Cilium, Calico), and the evaluator
that judges flows.

This is the one place that knows how selectors, peers and ports match; the synthesizer, ``diff``
and ``check`` all ask it. The cluster and flows it judges are records of :mod:`netpol_gen.model`.
"""

from netpol_gen.evaluator.engine import Evaluator
from netpol_gen.evaluator.frontends import load_policies, parse_any, policy_notes
from netpol_gen.evaluator.policy import NetworkPolicy, parse_policy
from netpol_gen.evaluator.verdict import Basis, FlowVerdict, RuleRef, SideVerdict, Verdict

__all__ = [
    "Basis",
    "Evaluator",
    "FlowVerdict",
    "NetworkPolicy",
    "RuleRef",
    "SideVerdict",
    "Verdict",
    "load_policies",
    "parse_any",
    "parse_policy",
    "policy_notes",
]
