"""The synthesizer: least-privilege NetworkPolicies from learned workloads and edges.

Input is plain data (:mod:`netpol_gen.model.learned`), so it does not depend on the store; NetworkPolicy matching is
left to the evaluator, which also verifies the result.
"""

from netpol_gen.model.learned import (
    LearnedEdge,
    LearnedInputs,
    LearnedWorkload,
    PodView,
)
from netpol_gen.synthesizer.options import Options
from netpol_gen.synthesizer.render import render_yaml
from netpol_gen.synthesizer.scope import LeftOut, select_edges
from netpol_gen.synthesizer.selectors import VOLATILE_LABELS, choose_selector
from netpol_gen.synthesizer.synthesize import Report, Synthesis, synthesize
from netpol_gen.synthesizer.verify import DeniedEdge, Verification, newly_opened, verify

__all__ = [
    "VOLATILE_LABELS",
    "DeniedEdge",
    "LearnedEdge",
    "LearnedInputs",
    "LearnedWorkload",
    "LeftOut",
    "Options",
    "PodView",
    "Report",
    "Synthesis",
    "Verification",
    "choose_selector",
    "newly_opened",
    "render_yaml",
    "select_edges",
    "synthesize",
    "verify",
]
