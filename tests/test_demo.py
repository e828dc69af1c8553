"""``make demo`` (examples/demo.sh, run as make runs it, with its output directory moved to a
temporary one): it prints what a newcomer reads at once, the summaries and where the detail went,
not the YAML, and it writes the policies, the full diff and the map."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_prints_summaries_and_paths_not_yaml(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(ROOT / "examples" / "demo.sh")], capture_output=True, text=True,
                            env={**os.environ, "DEMO_OUT": str(tmp_path / "demo")}, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert len(out.splitlines()) < 120, out
    assert "apiVersion:" not in out and "+++ b/" not in out  # no YAML, no unified diff
    assert "10 policies for 11 workloads learnt" in out and "Breaks nothing seen" in out
    assert f"map: {tmp_path / 'demo' / 'map.html'}" in out
    assert f"{tmp_path / 'demo' / 'diff.txt'}" in out
    assert "+++ b/booking/auth-netpol-gen" in (tmp_path / "demo" / "diff.txt").read_text()
    assert (tmp_path / "demo" / "map.html").stat().st_size > 0
