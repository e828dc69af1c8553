"""The benchmark generator at a tiny size: its snapshot, policies and flows must load and parse, so
the benchmark measures ``check`` on valid input; and memoised replay must agree with judging every
flow afresh, which is what makes the benchmark's speed honest."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench import gen_cluster
from netpol_gen.evaluator import Evaluator, load_policies
from netpol_gen.evaluator.replay import iter_verdicts, replay
from netpol_gen.model import iter_flows, load_cluster


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_generated_input_loads_and_replays(tmp_path: Path, fmt: str) -> None:
    sizes = gen_cluster.generate(tmp_path, namespaces=8, pods=120, nodes=3, flows=3000, fmt=fmt)
    cluster = load_cluster([str(tmp_path / f"cluster.{fmt}")], require_pods=True)
    policies = load_policies([str(tmp_path / "policies")])
    assert len(cluster.pods) == sizes.pods and len(policies) == sizes.policies > 0
    with (tmp_path / "flows.jsonl").open("rb") as stream:
        flows = list(iter_flows(stream, "flows.jsonl"))
    assert len(flows) == sizes.flows
    summary = replay(Evaluator(cluster, policies), flows)
    assert summary.flows == sizes.flows
    assert 0 < summary.denied < summary.allowed
    assert summary.via_service > 0


def test_generator_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        gen_cluster.generate(tmp_path / name, namespaces=6, pods=60, nodes=2, flows=500)
    for rel in ("cluster.yaml", "flows.jsonl"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_memoised_replay_matches_judging_each_flow(tmp_path: Path) -> None:
    gen_cluster.generate(tmp_path, namespaces=8, pods=120, nodes=3, flows=3000)
    cluster = load_cluster([str(tmp_path / "cluster.yaml")])
    policies = load_policies([str(tmp_path / "policies")])
    with (tmp_path / "flows.jsonl").open("rb") as stream:
        flows = list(iter_flows(stream, "flows.jsonl"))
    fresh = Evaluator(cluster, policies)
    memoised = list(iter_verdicts(Evaluator(cluster, policies), flows))
    assert len(memoised) == len(flows)
    for flow, result in zip(flows, memoised, strict=True):
        direct = fresh.judge_flow(flow)
        assert result.flow is flow
        assert result.verdicts == direct.verdicts
        assert result.service == direct.service


def _facts(tmp_path: Path, **knobs: Any) -> dict[str, Any]:
    """What a tiny generated scenario shows of each knob, read back through netpol-gen's own loaders."""
    out = tmp_path / "-".join(f"{k}{v}" for k, v in knobs.items()) if knobs else tmp_path / "default"
    gen_cluster.generate(out, namespaces=6, pods=150, nodes=3, flows=4000, shape=gen_cluster.Shape(**knobs))
    cluster = load_cluster([str(out / "cluster.yaml")])
    policies = load_policies([str(out / "policies")])
    records = [json.loads(line) for line in (out / "flows.jsonl").read_text().splitlines()]
    service_ips = {ip for service in cluster.services for ip in service.cluster_ips}
    app_replicas = Counter(pod.workload.name for pod in cluster.pods if pod.workload.kind == "Deployment"
                           and pod.ended is None and "team" in cluster.namespace_labels(pod.namespace))
    return {
        "replicas": set(app_replicas.values()),
        "shared": sum(policy.name.startswith("shared-") for policy in policies),
        "namespaces": len({policy.namespace for policy in policies}),
        "to_service": sum(r["dst_ip"] in service_ips for r in records) / len(records),
        "ipv6": sum(":" in r["src_ip"] for r in records),
        "internet": len({r[k] for r in records for k in ("src_ip", "dst_ip")
                         if ":" not in r[k] and not cluster.in_pod_network(r[k]) and r[k] not in service_ips
                         and cluster.node_at(r[k]) is None}),
        "restarts": len({pod.ended for pod in cluster.pods if pod.ended is not None}),
        "ipblock_rules": sum(1 for policy in policies for rule in policy.ingress for peer in rule.peers
                             if peer.ip_block is not None),
        "egress": sum("Egress" in policy.policy_types for policy in policies),
    }


def test_each_generator_knob_changes_what_it_says(tmp_path: Path) -> None:
    """The knobs bench/README.md documents (stands in for a bench run on each shape): each moves its own
    dimension of the scenario and the default leaves it where the original generator had it."""
    base = _facts(tmp_path)
    assert base["replicas"] != {5} and base["shared"] == 0 and base["ipv6"] == 0 and base["restarts"] == 1
    assert _facts(tmp_path, backends=5)["replicas"] == {5}
    overlapping = _facts(tmp_path, overlap=3)
    assert overlapping["shared"] == 3 * overlapping["namespaces"]
    assert _facts(tmp_path, service_share=0.0)["to_service"] < base["to_service"] / 2
    assert _facts(tmp_path, ipv6=0.5)["ipv6"] > 0
    assert _facts(tmp_path, external_ips=300)["internet"] > 10 * base["internet"]
    assert _facts(tmp_path, churn=0.5, restarts=4)["restarts"] == 4
    assert _facts(tmp_path, ipblocks=2)["ipblock_rules"] > 2 * base["ipblock_rules"]
    assert _facts(tmp_path, egress_share=1.0)["egress"] > base["egress"]


def test_cli_bench_reads_the_import_times_of_the_real_cli() -> None:
    """Stands in for the start-up row of bench_cli: ``-X importtime``'s format is parsed into the
    top-level modules ``--help`` loads, each with its cumulative microseconds, slowest first."""
    from bench.bench_cli import slowest_imports

    top = slowest_imports(50)
    assert any(name.startswith("netpol_gen.") for _, name in top)
    assert all(us > 0 for us, _ in top) and [us for us, _ in top] == sorted((us for us, _ in top), reverse=True)
