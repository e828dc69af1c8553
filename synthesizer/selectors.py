"""Pod selectors for workloads: the smallest set of stable labels that selects exactly a workload's
pods among all pods of its namespace, so the policy keeps selecting them after a restart, a scale-up
or a rollout, and selects nothing else today.

Matching is the evaluator's (:class:`LabelSelector`); this module only chooses which labels to use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from netpol_gen.evaluator.labels import LabelSelector
from netpol_gen.model.learned import LearnedWorkload, WorkloadKey

# Labels that change with every rollout, pod, job run or chart release: a selector on them would stop
# matching the next pods.
VOLATILE_LABELS = frozenset({
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
    "app.kubernetes.io/version",
    "helm.sh/chart",
    "chart",
    "version",
})

# Keys tried first, in this order; the rest follow sorted, which makes the choice deterministic.
PREFERRED_KEYS = ("app.kubernetes.io/name", "app", "k8s-app")


def stable_labels(labels: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k not in VOLATILE_LABELS}


def common_labels(label_sets: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """The labels (key and value) every one of ``label_sets`` carries."""
    sets = [set(stable_labels(labels).items()) for labels in label_sets]
    return dict(set.intersection(*sets)) if sets else {}


@dataclass(frozen=True, slots=True)
class SelectorChoice:
    """``match_labels`` empty means the workload's pods share no stable label: nothing can select them
    alone, and the caller must not write an empty selector for them as a subject."""

    match_labels: Mapping[str, str]
    warning: str | None = None


def ordered_keys(keys: Iterable[str]) -> list[str]:
    """Label keys in the order selectors try them (and folds pick the key whose values vary)."""
    keys = set(keys)
    return [k for k in PREFERRED_KEYS if k in keys] + sorted(keys - set(PREFERRED_KEYS))


def _selects_exactly(labels: Mapping[str, str], population: Sequence[tuple[frozenset, bool]]) -> bool:
    selector = LabelSelector.parse({"matchLabels": dict(labels)}, "podSelector")
    return all(selector.matches(dict(items)) == own for items, own in population)


def _smallest(candidates: Mapping[str, str], population: Sequence[tuple[frozenset, bool]]) -> dict[str, str] | None:
    """The first subset, by size then preference order, that selects exactly the own pods."""
    keys = ordered_keys(candidates)
    for size in range(1, len(keys) + 1):
        for combo in combinations(keys, size):
            labels = {k: candidates[k] for k in combo}
            if _selects_exactly(labels, population):
                return dict(sorted(labels.items()))
    return None


def choose_selector(workload: LearnedWorkload, namespace_workloads: Iterable[LearnedWorkload]) -> SelectorChoice:
    """Pick ``workload``'s pod selector among the pods of ``namespace_workloads`` (its namespace).

    Labels come from the controller's selector when known (immutable, so the most stable), widened to
    the labels all its pods share when the selector alone cannot tell it from another workload, which
    is worth a warning; when no label set separates it, all its stable labels are used, with a warning.
    """
    # Distinct (stable labels, own) pairs: pods of a workload mostly differ only in volatile labels.
    population = sorted(
        {
            (frozenset(stable_labels(pod.labels).items()), other.key == workload.key)
            for other in namespace_workloads
            for pod in other.pods
        },
        key=lambda entry: (sorted(entry[0]), entry[1]),
    )
    common = common_labels(pod.labels for pod in workload.pods)
    from_controller = stable_labels(workload.controller_selector or {})
    if from_controller:
        found = _smallest(from_controller, population)
        if found is not None:
            return SelectorChoice(found)
    found = _smallest(common, population)
    if found is not None:
        warning = None
        if from_controller:
            warning = (f"{workload}: its controller's selector also selects other pods of the namespace; "
                       f"added pod labels to tell them apart")
        return SelectorChoice(found, warning)
    if not common:
        return SelectorChoice({}, f"{workload}: its pods share no stable label; no selector can name them")
    others = [w for w in namespace_workloads if w.key != workload.key]
    overlapping = sorted("/".join(w.key[1:]) for w in selected_workloads(common, others))
    return SelectorChoice(
        dict(sorted(common.items())),
        f"{workload}: no label set selects only its pods (also selects {', '.join(overlapping)}); "
        f"using all its stable labels",
    )


def selected_workloads(labels: Mapping[str, str], workloads: Iterable[LearnedWorkload]) -> list[LearnedWorkload]:
    """The workloads with a pod that ``labels`` (as matchLabels) select."""
    selector = LabelSelector.parse({"matchLabels": dict(labels)}, "podSelector")
    return [w for w in workloads if any(selector.matches(pod.labels) for pod in w.pods)]


class SelectorCache:
    """Selectors computed once per workload: a workload is named by its own policy and as a peer."""

    def __init__(self, workloads: Iterable[LearnedWorkload]) -> None:
        self._by_namespace: dict[str, list[LearnedWorkload]] = {}
        self.workloads: dict[WorkloadKey, LearnedWorkload] = {}
        for workload in workloads:
            self._by_namespace.setdefault(workload.namespace, []).append(workload)
            self.workloads[workload.key] = workload
        self._choices: dict[WorkloadKey, SelectorChoice] = {}

    def choice(self, key: WorkloadKey) -> SelectorChoice:
        found = self._choices.get(key)
        if found is None:
            workload = self.workloads[key]
            found = choose_selector(workload, self._by_namespace[workload.namespace])
            self._choices[key] = found
        return found

    def warnings(self) -> list[str]:
        return sorted({c.warning for c in self._choices.values() if c.warning})
