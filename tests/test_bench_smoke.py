"""The benchmark generator at a tiny size: its snapshot, policies and flows must load and parse, so
the benchmark measures ``check`` on valid input; and memoised replay must agree with judging every
flow afresh, which is what makes the benchmark's speed honest."""

from __future__ import annotations

from pathlib import Path

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
