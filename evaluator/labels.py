"""Label selectors (metav1.LabelSelector) compiled once and matched many times.

Semantics follow apimachinery's ``LabelSelectorAsSelector``: all requirements are ANDed, an empty
selector matches everything, ``NotIn`` and ``DoesNotExist`` match objects that lack the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from netpol_gen.errors import PolicyError

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

_NAME_PART = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def label_key_problem(key: object) -> str | None:
    """Why ``key`` is not a valid qualified label key, or None (IsQualifiedName)."""
    if not isinstance(key, str) or not key:
        return f"label key {key!r} must be a non-empty string"
    return _qualified_name_problem(key)


# a policy set repeats the same few label keys and values thousands of times (every peer of every rule,
# parsed again for verification and fold proofs): each string's regex checks run once per process
@lru_cache(maxsize=4096)  # bounded: a long-running serve sees new labels for ever
def _qualified_name_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if "/" in prefix:
        return f"label key {key!r} has more than one '/'"
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"label key {key!r} has an invalid prefix (must be a DNS subdomain)"
    if len(name) > 63 or not _NAME_PART.match(name):
        return f"label key {key!r} is invalid (name part: up to 63 alphanumerics, '-', '_' or '.')"
    return None


def label_value_problem(value: object) -> str | None:
    """Why ``value`` is not a valid label value, or None (IsValidLabelValue)."""
    if not isinstance(value, str):
        return f"label value {value!r} must be a string"
    return _value_problem(value)


@lru_cache(maxsize=4096)  # bounded: a long-running serve sees new labels for ever
def _value_problem(value: str) -> str | None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return f"label value {value!r} is invalid (up to 63 alphanumerics, '-', '_' or '.')"
    return None


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``key op values`` term; matchLabels entries become ``key In (value)``."""

    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A parsed selector; ``requirements`` empty means "everything"."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @classmethod
    def parse(cls, raw: Any, field: str) -> LabelSelector:
        """Parse and validate a LabelSelector as the API server does; errors name ``field``."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise PolicyError(f"{field} must be a mapping, got {type(raw).__name__}")
        unknown = set(raw) - {"matchLabels", "matchExpressions"}
        if unknown:
            raise PolicyError(f"{field}: unknown field(s) {', '.join(sorted(unknown))}")
        reqs: list[Requirement] = []
        match_labels = raw.get("matchLabels") or {}
        if not isinstance(match_labels, Mapping):
            raise PolicyError(f"{field}.matchLabels must be a mapping")
        for key, value in match_labels.items():
            problem = label_key_problem(key) or label_value_problem(value)
            if problem:
                raise PolicyError(f"{field}.matchLabels: {problem}")
            reqs.append(Requirement(key, "In", frozenset([value])))
        expressions = raw.get("matchExpressions") or []
        if not isinstance(expressions, list):
            raise PolicyError(f"{field}.matchExpressions must be a list")
        for i, expr in enumerate(expressions):
            reqs.append(_parse_expression(expr, f"{field}.matchExpressions[{i}]"))
        return cls(tuple(reqs))


def _parse_expression(expr: Any, field: str) -> Requirement:
    if not isinstance(expr, Mapping):
        raise PolicyError(f"{field} must be a mapping")
    key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values")
    problem = label_key_problem(key)
    if problem:
        raise PolicyError(f"{field}: {problem}")
    if operator not in OPERATORS:
        raise PolicyError(f"{field}: operator {operator!r} is not one of {', '.join(OPERATORS)}")
    values = values or []
    if not isinstance(values, list):
        raise PolicyError(f"{field}.values must be a list")
    if operator in ("In", "NotIn") and not values:
        raise PolicyError(f"{field}: operator {operator} needs at least one value")
    if operator in ("Exists", "DoesNotExist") and values:
        raise PolicyError(f"{field}: operator {operator} takes no values")
    for value in values:
        problem = label_value_problem(value)
        if problem:
            raise PolicyError(f"{field}.values: {problem}")
    return Requirement(str(key), str(operator), frozenset(values))
