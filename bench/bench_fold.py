"""The size of what ``export`` writes before and after exact folding (issue #14), as one table.

Scenarios: the bundled example (``examples/ticket-booking``, imported as ``make demo`` does), a
``gen_cluster.py`` cluster and flows (imported with the real CLI), and, ingress-only, the traffic that
the hand-written policies of six public apps allow between their workloads (:mod:`bench.reference_apps`),
next to the pod-selector peers of those hand-written policies. ``before`` is ``Options(fold=False)``
(the output before #14), ``after`` the default, ``ns-fold`` adds ``--fold-namespaces``.

    .venv/bin/python -m bench.bench_fold [--pods 300 --flows 20000]
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench import gen_cluster, reference_apps
from netpol_gen.model.learned import LearnedInputs
from netpol_gen.store.db import open_store
from netpol_gen.store.learned import load_learned
from netpol_gen.synthesizer import Options, Report, synthesize

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ticket-booking"
NETPOL_GEN = str(Path(sys.executable).with_name("netpol-gen"))


def imported(work: Path, *sources: str) -> LearnedInputs:
    """``netpol-gen import`` of ``sources`` (its options) into a fresh store under ``work``, read back."""
    url = f"sqlite:///{work / 'learned.db'}"
    subprocess.run([NETPOL_GEN, "import", "--db", url, *sources], check=True, stdout=subprocess.DEVNULL)
    store = open_store(url, create=False)
    try:
        return load_learned(store)
    finally:
        store.close()


def sizes(report: Report) -> str:
    return f"{report.policies:>4} {report.rules:>5} {report.peers:>5} {report.yaml_lines:>6}"


def rows(inputs: LearnedInputs, name: str, ingress_only: bool, reference: int | None = None) -> Iterator[str]:
    base = Options(ingress_only=ingress_only)
    before, after, wide = (synthesize(inputs, o) for o in (dataclasses.replace(base, fold=False), base,
                                                          dataclasses.replace(base, fold_namespaces=True)))
    ok = all(s.ok for s in (before, after, wide))
    ref = "" if reference is None else f"{reference:>5}"
    yield (f"{name:<28}{'ingress' if ingress_only else 'both':<9}{sizes(before.report)}   {sizes(after.report)}"
           f"   {wide.report.peers:>7}   {ref:>9}  {'ok' if ok else 'DENIES OBSERVED TRAFFIC'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=300, help="pods of the gen_cluster scenario")
    parser.add_argument("--flows", type=int, default=20_000, help="flows of the gen_cluster scenario")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(f"{'':<37}{'before':^23}   {'after':^23}   {'ns-fold':>7}   {'reference':>9}")
    print(f"{'scenario':<28}{'rules of':<9}{'pol rules peers  lines':>23}   {'pol rules peers  lines':>23}"
          f"   {'peers':>7}   {'peers':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "example").mkdir()
        example = imported(work / "example", "--cluster", str(EXAMPLE / "cluster.yaml"),
                           "--pcap", str(EXAMPLE / "capture.pcap"))
        generated = work / "generated"
        gen_cluster.generate(generated, seed=args.seed, namespaces=max(2, args.pods // 40), pods=args.pods,
                             nodes=3, flows=args.flows)
        synthetic = imported(generated, "--cluster", str(generated / "cluster.yaml"),
                             "--flows", str(generated / "flows.jsonl"))
        for ingress_only in (False, True):
            print(*rows(example, "example ticket-booking", ingress_only), sep="\n")
        for ingress_only in (False, True):
            print(*rows(synthetic, f"gen_cluster {args.pods} pods", ingress_only), sep="\n")
    if not reference_apps.REFERENCE.is_dir():
        print(f"reference policies not found at {reference_apps.REFERENCE}: comparison skipped")
        return
    for name in reference_apps.APPS:
        app = reference_apps.build(name)
        print(*rows(app.inputs, f"reference {name}", True, app.reference_peers), sep="\n")


if __name__ == "__main__":
    main()
