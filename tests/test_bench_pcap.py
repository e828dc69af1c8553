"""The pcap benchmark at a tiny size: the generated capture reads to the same flows with and without the
tcpdump pre-filter, and the benchmark prints its same-run ratio to tcpdump with the filter."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gen_pcap

ROOT = Path(__file__).resolve().parent.parent


def test_bench_import_pcap_reports_the_ratio_to_tcpdump(tmp_path: Path) -> None:
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed: the bench has no baseline")
    path = tmp_path / "small.pcap"
    assert gen_pcap.generate(str(path), 3000) == 3000
    run = subprocess.run([sys.executable, "-m", "bench.bench_import_pcap", str(path), "--repeat", "1"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert "read_capture bpf=True / tcpdump FILTER, same run: wall " in run.stdout
    said = dict(line.split("] ", 1) for line in run.stderr.splitlines() if line.startswith("  ["))
    flows = {mode: said[f"  [{mode}"].split()[0] for mode in ("bpf", "python")}
    assert flows["bpf"] == flows["python"] != "flows=0"
