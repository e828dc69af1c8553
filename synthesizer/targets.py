"""Export targets: the one synthesis rendered for the policy engine in use. Translation happens
before verification, so what is verified (by the evaluator, on the translated set) is what is written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from netpol_gen.model.learned import LearnedInputs
from netpol_gen.names import CALICO, CILIUM, KUBERNETES, TARGETS
from netpol_gen.synthesizer.explain import RuleEvidence
from netpol_gen.synthesizer.render_calico import to_calico
from netpol_gen.synthesizer.render_cilium import to_cilium

__all__ = ["CALICO", "CILIUM", "KUBERNETES", "TARGETS", "translate"]


def translate(policies: Sequence[dict[str, Any]], evidence: Mapping[tuple[str, str], RuleEvidence],
              inputs: LearnedInputs, target: str,
              fqdn_patterns: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """The policies for ``target`` and the translation's warnings."""
    if target == KUBERNETES:
        return list(policies), []
    if target == CILIUM:
        return to_cilium(policies, evidence, inputs, fqdn_patterns)
    if target == CALICO:
        return to_calico(policies), []
    raise ValueError(f"unknown target {target!r}; one of {', '.join(TARGETS)}")
