"""The policies in force in a live cluster, read (list only) from the API server."""

from __future__ import annotations

from typing import Any

from netpol_gen.errors import InputError
from netpol_gen.evaluator.policy_diff import PolicyDocument, policy_documents
from netpol_gen.model.documents import Document


def fetch_policies_in_force(page_size: int = 500) -> list[PolicyDocument]:
    """Every NetworkPolicy of every namespace, read page by page (kubeconfig or in-cluster)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from netpol_gen.collector.kube import api_client  # the kubernetes client is slow to import: only here

    try:
        api = api_client()
    except InputError as exc:
        raise InputError(exc.what, where="--against-cluster") from None
    items: list[Any] = []
    with api:
        networking = client.NetworkingV1Api(api)
        token = None
        try:
            while True:
                page = networking.list_network_policy_for_all_namespaces(limit=page_size, _continue=token)
                items.extend(page.items)
                token = page.metadata._continue if page.metadata is not None else None
                if not token:
                    break
        except ApiException as exc:
            raise InputError(f"listing NetworkPolicies failed: HTTP {exc.status} {exc.reason}",
                             where="--against-cluster") from None
        except HTTPError as exc:
            raise InputError(f"cannot reach the API server at {api.configuration.host}: {exc}",
                             where="--against-cluster") from None
        objects = [api.sanitize_for_serialization(item) for item in items]
    return policy_documents(
        Document(f"cluster:{obj['metadata'].get('namespace')}/{obj['metadata'].get('name')}",
                 {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **obj})
        for obj in objects
    )
