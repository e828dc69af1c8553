"""The Hubble flow JSON that bench_cli feeds hubble-audit2policy (issue #15's peer baseline): one record
per flow, each end a pod with its labels or a reserved identity, a port, the AUDIT verdict; and, where
the tool is installed, it turns every flow into policy rules (else that half skips, saying why)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from bench import gen_cluster
from bench.hubble_flows import write_hubble_flows


def test_every_flow_becomes_one_hubble_record_with_identities(tmp_path: Path) -> None:
    sizes = gen_cluster.generate(tmp_path, namespaces=6, pods=60, nodes=2, flows=500)
    assert write_hubble_flows(tmp_path, tmp_path / "hubble.jsonl") == sizes.flows
    records = [json.loads(line)["flow"] for line in (tmp_path / "hubble.jsonl").read_text().splitlines()]
    assert len(records) == sizes.flows
    assert {r["verdict"] for r in records} == {"AUDIT"}
    for record in records:
        ((protocol, ports),) = record["l4"].items()
        assert protocol in {"TCP", "UDP", "SCTP"} and ports["destination_port"] > 0
        for end in (record["source"], record["destination"]):
            assert end["labels"] and ("pod_name" in end or end["labels"][0].startswith("reserved:"))
    assert any("pod_name" in r["destination"] for r in records)


def test_audit2policy_turns_every_flow_into_rules(tmp_path: Path) -> None:
    try:
        a2p = importlib.import_module("hubble_audit2policy")
    except ImportError:
        pytest.skip("hubble-audit2policy is not installed (pip install -e '.[bench]')")
    gen_cluster.generate(tmp_path, namespaces=6, pods=60, nodes=2, flows=500)
    count = write_hubble_flows(tmp_path, tmp_path / "hubble.jsonl")
    policies, _, total, matched, _ = a2p.parse_flows(str(tmp_path / "hubble.jsonl"), a2p.DEFAULT_LABEL_KEYS,
                                                     set(), set())
    assert total == count and matched == count and policies
