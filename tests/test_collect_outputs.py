"""`collect --output`: the JSONL file outlives a collector restart."""

from __future__ import annotations

from pathlib import Path

from netpol_gen.collector.agent import Interval
from netpol_gen.collector.capture_sinks import open_outputs
from netpol_gen.model.flows import Flow, iter_flows


def test_a_restarted_collector_appends_to_its_jsonl_output(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    for run, port in enumerate((8080, 9090)):
        (sink,), frames = open_outputs((f"jsonl:{path}",))
        assert frames == []
        flow = Flow("10.0.0.1", "10.0.0.2", port, "TCP", 40000, 1_790_000_000.0 + run)
        sink.deliver(Interval(f"run{run}", 0, 1, [flow], []))
        sink.close()
    with path.open("rb") as stream:
        assert [flow.dst_port for flow in iter_flows(stream, str(path))] == [8080, 9090]
