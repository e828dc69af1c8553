"""Our flows as Hubble flow JSON, the input of hubble-audit2policy (issue #15's other baseline).

Hubble reports each end as Cilium saw it: a pod's namespace, name and labels (``k8s:KEY=VALUE``), or a
reserved identity (``reserved:world`` for an outside address, ``reserved:host``/``reserved:remote-node``
for node addresses), and the destination after Service translation. So each flow's ends are looked up
in the cluster snapshot at the flow's time (:meth:`Cluster.endpoint`, :meth:`Cluster.service_target`;
a Service address becomes its first backend on the targetPort). Every flow gets the verdict ``AUDIT``
(what ``hubble observe --verdict AUDIT`` captures and audit2policy turns into policies), so the tool
writes policies for all of them. Only the fields audit2policy reads are written, in the ``{"flow": ...}``
envelope of ``hubble observe -o json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from netpol_gen.model import load_cluster
from netpol_gen.model.cluster import Cluster, Endpoint, EndpointKind, Pod
from netpol_gen.model.flows import iter_records


def _pod_end(pod: Pod) -> dict[str, Any]:
    labels = [f"k8s:{key}={value}" for key, value in sorted(pod.labels.items())]
    return {"namespace": pod.namespace, "pod_name": pod.name,
            "labels": [*labels, f"k8s:io.kubernetes.pod.namespace={pod.namespace}"]}


def _end(endpoint: Endpoint) -> dict[str, Any]:
    if endpoint.pod is not None:
        return _pod_end(endpoint.pod)
    if endpoint.kind is EndpointKind.NODE:
        return {"labels": ["reserved:remote-node"]}
    return {"labels": ["reserved:world"]}


def hubble_flows(cluster: Cluster, flows: Path) -> Iterator[dict[str, Any]]:
    """Each flow of the JSONL file ``flows`` as a Hubble flow record (see the module docstring)."""
    with flows.open("rb") as stream:
        for _, record in iter_records(stream, str(flows)):
            ts, port = record.ts, record.dst_port
            target = cluster.service_target(record.dst_ip, port, record.protocol, ts)
            if target is not None and target.backends:
                backend = target.backends[0]
                destination, port = _pod_end(backend.pod), backend.port
            else:
                destination = _end(cluster.endpoint(record.dst_ip, ts))
            l4 = {record.protocol.upper(): {"source_port": record.src_port or 0, "destination_port": port}}
            yield {"flow": {"verdict": "AUDIT", "source": _end(cluster.endpoint(record.src_ip, ts)),
                            "destination": destination, "l4": l4}}


def write_hubble_flows(data: Path, out: Path) -> int:
    """``data``'s flows (a ``gen_cluster.py`` directory) as Hubble JSONL in ``out``; the number written."""
    cluster = load_cluster([str(data / "cluster.yaml")], require_pods=True)
    count = 0
    with out.open("w", encoding="utf-8") as stream:
        for flow in hubble_flows(cluster, data / "flows.jsonl"):
            stream.write(json.dumps(flow, separators=(",", ":")) + "\n")
            count += 1
    return count
