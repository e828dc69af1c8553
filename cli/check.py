"""``netpol-gen check``: replay recorded flows against a policy set and say, flow by flow, whether
each would be allowed and why. Exit 0 when all are allowed, 1 when any is denied, 2 on bad input."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import click

from netpol_gen.cli.options import server_options

if TYPE_CHECKING:
    from netpol_gen.evaluator import FlowVerdict, Verdict
    from netpol_gen.evaluator.replay import ReplaySummary
    from netpol_gen.model.flows import FlowReadStats


class _Connections:
    """Distinct connections (verdicts are cached, so one object per connection) with flow counts.

    Flows are counted per verdict tuple, by id (the tuple is kept, so its id stays its own): a
    repeated connection shares its tuple (see ``iter_verdicts``), and hashing each Verdict of every
    flow would cost more than judging it. Tuples expand to connections once, for the report."""

    def __init__(self) -> None:
        self._kept: dict[int, tuple[Verdict, ...]] = {}
        self._flows: Counter[int] = Counter()

    def add(self, result: FlowVerdict, flows: int = 1) -> None:
        key = id(result.verdicts)
        self._kept.setdefault(key, result.verdicts)
        self._flows[key] += flows

    @property
    def counts(self) -> Counter[Verdict]:
        counts: Counter[Verdict] = Counter()
        for key, flows in self._flows.items():
            for verdict in self._kept[key]:
                counts[verdict] += flows
        return counts

    def sorted(self, *, allowed: bool) -> list[tuple[Verdict, int]]:
        chosen = [(v, n) for v, n in self.counts.items() if v.allowed == allowed]
        return sorted(chosen, key=lambda item: (-item[1], item[0].src.describe(), item[0].dst.describe()))


def _connection_line(verdict: Verdict, count: int) -> str:
    return (
        f"  {verdict.src.describe()} -> {verdict.dst.describe()} {verdict.protocol}/{verdict.port}"
        f"  x{count}: {verdict.reason()}"
    )


def _print_text(summary: ReplaySummary, connections: _Connections, explain: bool, read: FlowReadStats) -> None:
    denied = connections.sorted(allowed=False)
    click.echo(
        f"flows: {summary.flows}  allowed: {summary.allowed}  denied: {summary.denied}"
        f"  (via a Service: {summary.via_service}"
        + (f", bad lines skipped: {read.skipped}" if read.skipped else "")
        + ")"
    )
    totals = summary.to_dict()["by_policy"]
    if totals:
        width = max(len(name) for name in totals)
        click.echo(f"\n{'policy':<{width}}  {'admitted':>9}  {'denied':>7}")
        for name, counts in totals.items():
            click.echo(f"{name:<{width}}  {counts['admitted']:>9}  {counts['denied']:>7}")
    if denied:
        click.echo(f"\ndenied ({len(denied)} distinct connections):")
        for verdict, count in denied:
            click.echo(_connection_line(verdict, count))
    if explain:
        allowed = connections.sorted(allowed=True)
        click.echo(f"\nallowed ({len(allowed)} distinct connections):")
        for verdict, count in allowed:
            click.echo(_connection_line(verdict, count))


def _json_report(summary: ReplaySummary, connections: _Connections, explain: bool) -> dict[str, Any]:
    from netpol_gen.evaluator.replay import verdict_to_dict

    def listing(allowed: bool) -> list[dict[str, Any]]:
        return [
            {**verdict_to_dict(v, explain=explain), "flows": n} for v, n in connections.sorted(allowed=allowed)
        ]

    report: dict[str, Any] = {"summary": summary.to_dict(), "denied": listing(False)}
    if explain:
        report["allowed"] = listing(True)
    return report


def _write_json(report: dict[str, Any]) -> None:
    """Write the report as ``json.dumps(report, indent=2)`` would, in pieces: at a million flows it
    is a large string, which whole (and again encoded) would more than double peak memory."""
    pending: list[str] = []
    for chunk in json.JSONEncoder(indent=2).iterencode(report):
        pending.append(chunk)
        if len(pending) >= 65536:
            click.echo("".join(pending), nl=False)
            pending.clear()
    click.echo("".join(pending))


@click.command()
@click.option("--cluster", "clusters", multiple=True, required=True, type=str,
              help="Cluster snapshot (kubectl get ... -o yaml|json) file or directory; repeatable.")
@click.option("--policies", multiple=True, required=True, type=str,
              help="NetworkPolicy YAML/JSON file or directory; repeatable. An empty file is an empty set.")
@click.option("--flows", "flows_path", required=True, type=str, help="Flows as JSONL ('-' for stdin).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "jsonl"]), default="text", show_default=True)
@click.option("--explain", is_flag=True, help="Also name the policy rules that admitted each allowed flow.")
@click.option("--skip-bad-lines", is_flag=True,
              help="Skip malformed flow lines (counted) instead of aborting at the first one.")
@click.option("--db", "db_url", default=None, metavar="URL",
              help="Name external addresses by the DNS answers recorded in this store (Cilium toFQDNs), and "
                   "take the API server addresses it learnt (kube-apiserver).")
@server_options
def check(clusters: tuple[str, ...], policies: tuple[str, ...], flows_path: str, fmt: str, explain: bool,
          skip_bad_lines: bool, db_url: str | None, server_url: str | None, token: str | None) -> None:
    """Replay flows against policies; report every flow that would be denied, and why."""
    # the library here, not at the top: `netpol-gen --help` lists this command without loading it
    from netpol_gen.evaluator import Evaluator, load_policies, policy_notes
    from netpol_gen.evaluator.stream import replay_stream
    from netpol_gen.model import load_cluster
    from netpol_gen.model.flows import FlowReadStats, names_in_flows, open_flows

    cluster = load_cluster(clusters)
    answers, api_servers = [], []
    if db_url is not None or server_url is not None:
        from netpol_gen.service.source import learning_source  # the HTTP client is slow to import: only here

        with learning_source(db_url, server_url, token) as source:
            answers, api_servers = source.dns_answers(), source.api_servers()
    if flows_path != "-":  # names the flows carry (dst_names): a second read of the file, before judging
        stream, _ = open_flows(flows_path)
        with stream:
            answers += names_in_flows(stream)
    if answers or api_servers:
        cluster.set_dns(answers, api_servers)
    policy_set = load_policies(policies)
    for note in policy_notes(policy_set):
        click.echo(f"warning: {note}", err=True)
    evaluator = Evaluator(cluster, policy_set)
    stream, name = open_flows(flows_path)
    read = FlowReadStats()
    # jsonl: verdicts stream out in input order; a bad line later still aborts with exit 2
    replayed = replay_stream(evaluator, stream, name, skip_bad=skip_bad_lines, stats=read, explain=explain,
                             write=(lambda data: click.echo(data, nl=False)) if fmt == "jsonl" else None,
                             keep_connections=fmt != "jsonl")
    summary = replayed.summary
    if fmt != "jsonl":
        connections = _Connections()
        for result, count in replayed.connections:
            connections.add(result, count)
        if fmt == "json":
            report = _json_report(summary, connections, explain)
            report["summary"]["bad_lines_skipped"] = read.skipped
            _write_json(report)
        else:
            _print_text(summary, connections, explain, read)
    raise SystemExit(1 if summary.denied else 0)
