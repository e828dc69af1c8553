"""Generate the input of ``bench_import_flows.py``: a cluster snapshot of a few hundred pods and 1,000,000
JSONL flows over it - ``gen_flows.py OUT [--flows N] [--pods N] [--duplicates F]``.

The cluster and the traffic are ``gen_cluster.py``'s (Deployments, StatefulSets and DaemonSets behind
Services with named targetPorts, pod churn with reused IPs, kubelet probes from nodes, DNS, traffic to and
from the internet); this script sizes it for an import and adds what an import must cope with that
``check`` does not: a fraction of the connections is written twice, a fraction of a second apart, as
captures on both the source's and the destination's node show them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from bench import gen_cluster


def generate(out: Path, *, flows: int, pods: int, namespaces: int, nodes: int, duplicates: float,
             seed: int = 1) -> tuple[int, int]:
    """Write ``cluster.yaml`` and ``flows.jsonl`` under ``out``; return (pods, lines written)."""
    rng = random.Random(seed)
    cluster = gen_cluster.Cluster(rng, namespaces, pods, nodes)
    items = gen_cluster.cluster_objects(cluster)
    out.mkdir(parents=True, exist_ok=True)
    snapshot = {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}
    (out / "cluster.yaml").write_text(gen_cluster.to_yaml(snapshot))
    written = 0
    with (out / "flows.jsonl").open("w", encoding="utf-8") as fh:
        for line in gen_cluster.flow_lines(cluster, flows):
            fh.write(line)
            written += 1
            if rng.random() < duplicates:  # the same connection as the other node's capture saw it
                record = json.loads(line)
                record["ts"] = round(record["ts"] + rng.uniform(0.0, 0.5), 3)
                fh.write(json.dumps(record, separators=(",", ":")) + "\n")
                written += 1
    return sum(1 for item in items if item["kind"] == "Pod"), written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--flows", type=int, default=1_000_000, help="distinct connections (before duplicates)")
    parser.add_argument("--pods", type=int, default=300)
    parser.add_argument("--namespaces", type=int, default=12)
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--duplicates", type=float, default=0.05, help="fraction of connections written twice")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    pods, lines = generate(args.out, flows=args.flows, pods=args.pods, namespaces=args.namespaces,
                           nodes=args.nodes, duplicates=args.duplicates, seed=args.seed)
    print(f"{args.out}: {pods} pods, {lines:,} flow lines ({lines - args.flows:,} duplicates) "
          f"in {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
