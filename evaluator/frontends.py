"""One semantics engine, several front-ends: each policy document is read by the parser of its API
(NetworkPolicy, Cilium, Calico) into the one policy model the :class:`~.engine.Evaluator` judges."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from netpol_gen.errors import PolicyError
from netpol_gen.evaluator import calico, cilium, cluster_network_policy
from netpol_gen.evaluator.policy import NetworkPolicy, parse_policy
from netpol_gen.model.documents import Document, load_documents


def parse_any(obj: Mapping[str, Any], *, where: str = "", default_namespace: str = "default") -> NetworkPolicy:
    """Parse a NetworkPolicy, CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, Calico
    (Global)NetworkPolicy, ClusterNetworkPolicy (v1alpha2) or v1alpha1 (Baseline)AdminNetworkPolicy;
    PolicyError for any other kind."""
    group = str(obj.get("apiVersion") or "").split("/")[0]
    kind = obj.get("kind")
    if group == "cilium.io" and kind in cilium.KINDS:
        return cilium.parse_cilium(obj, where=where, default_namespace=default_namespace)
    if obj.get("apiVersion") == cluster_network_policy.API_VERSION and kind == cluster_network_policy.KIND:
        return cluster_network_policy.parse_cluster_network_policy(obj, where=where)
    if obj.get("apiVersion") == cluster_network_policy.V1ALPHA1 and kind in cluster_network_policy.V1ALPHA1_KINDS:
        return cluster_network_policy.parse_admin_network_policy(obj, where=where)
    if obj.get("apiVersion") in calico.API_VERSIONS and kind in calico.KINDS:
        return calico.parse_calico(obj, where=where, default_namespace=default_namespace)
    return parse_policy(obj, where=where, default_namespace=default_namespace)


def load_policies(paths: Iterable[str], *, default_namespace: str = "default") -> list[NetworkPolicy]:
    """All policies in the given files/directories; unknown kinds are an error, duplicates too."""
    return parse_documents(load_documents(paths, PolicyError), default_namespace=default_namespace)


def parse_documents(docs: Iterable[Document], *, default_namespace: str = "default") -> list[NetworkPolicy]:
    """The policies of documents read before (a stored shadow set's); PolicyError as :func:`load_policies`."""
    policies: list[NetworkPolicy] = []
    seen: dict[str, str] = {}
    for doc in docs:
        policy = parse_any(doc.obj, where=doc.where, default_namespace=default_namespace)
        if policy.key in seen:
            raise PolicyError(f"duplicate of the policy at {seen[policy.key]}", where=doc.where,
                              obj=f"policy {policy.key}")
        seen[policy.key] = doc.where
        policies.append(policy)
    return policies


def policy_notes(policies: Sequence[NetworkPolicy]) -> list[str]:
    """What the evaluator does not judge in these policies, each said once."""
    return list(dict.fromkeys(note for policy in policies for note in policy.notes))
