"""Issue #10: well-formed but hostile or out-of-range input is refused at the boundary with one line
naming file:line and field, exit 2, nothing stored; and the store stays readable afterwards.

Stands in for a user (or a broken tool upstream) feeding `check`, `import` and `diff` bad files: the
real CLI in-process, real SQLite and PostgreSQL stores, the real YAML and JSON parsers. The
property tests at the end fuzz the flow parser and `import` with generated lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netpol_gen.errors import FlowError
from netpol_gen.model.flows import MAX_LINE, parse_flow
from netpol_gen.store import schema as t
from tests.cli import run_cli
from tests.test_cli_import import CLUSTER_ARGS, edge_count
from tests.test_import import API_SVC, FRONTEND, at

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ticket-booking"
GOOD = {"src_ip": FRONTEND, "dst_ip": API_SVC, "dst_port": 80, "protocol": "TCP", "src_port": 1,
        "ts": at("10:30:00")}


def _line(**change: object) -> bytes:
    return json.dumps({**GOOD, **change}).encode()  # json.dumps writes Infinity/NaN as JavaScript does


# A bad second line and the words its one-line error must hold (the field, or why).
BAD_LINES = [
    (_line(ts=float("inf")), "not valid JSON"),
    (_line(ts=float("nan")), "not valid JSON"),
    (_line(ts=1e300), "ts: expected float <="),
    (_line(ts=-1e18), "ts: expected float >="),
    (_line(ts=at("10:30:00") + 400 * 86400 * 10), "ts:"),
    (_line(packets=10**23), "packets: expected int <="),
    (b'{"src_ip":"10.244.1.10","dst_ip":"10.96.10.10","dst_port":80,"protocol":"TCP","packets":1e23}',
     "packets: expected int | null, got float"),
    (_line(bytes=-1), "bytes: expected int >= 0"),
    (_line(dst_port=0), "dst_port: expected int >= 1"),
    (_line(dst_port=99999), "dst_port: expected int <= 65535"),
    (_line(protocol="ICMP"), "protocol:"),
    (_line(src_ip="../../etc"), "src_ip: '../../etc' is not an IP address"),
    (b"[" * 100_000 + b"]" * 100_000, "line"),
    (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "line"),
    (b"\xff\xfe\x00binary\x80", "not valid JSON"),
    (b'{"x": "' + b"a" * (MAX_LINE + 10) + b'"}', f"line longer than {MAX_LINE} bytes"),
]


def _bad_file(tmp_path: Path, line: bytes) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + line + b"\n")
    return path


def _one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("netpol-gen: error: "), stderr
    return lines[0]


@pytest.mark.parametrize(("line", "words"), BAD_LINES, ids=[w for _l, w in BAD_LINES])
def test_check_refuses_a_bad_flow_line_in_one_line(tmp_path: Path, line: bytes, words: str) -> None:
    path = _bad_file(tmp_path, line)
    code, _out, err = run_cli("check", "--cluster", str(EXAMPLE / "cluster.yaml"), "--policies",
                              str(EXAMPLE / "policies"), "--flows", str(path))
    assert code == 2
    message = _one_line(err)
    assert f"{path}:line 2: " in message and words in message, message


@pytest.mark.parametrize(("line", "words"), BAD_LINES[:6], ids=[w for _l, w in BAD_LINES[:6]])
def test_import_refuses_a_bad_flow_line_and_stores_nothing(store_url: str, tmp_path: Path, line: bytes,
                                                           words: str) -> None:
    path = _bad_file(tmp_path, line)
    code, _out, err = run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--flows", str(path))
    assert code == 2 and words in _one_line(err)
    assert run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--flows", str(path)).exit_code == 2  # not "known"
    assert edge_count(store_url) == 0
    for command in (["flows"], ["status"], ["export"]):  # the store is still readable
        assert run_cli(*command, "--db", store_url).exit_code in (0, 1), command


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(8)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  annotations:\n"
                    + "".join(f"    {line}\n" for line in levels) + "spec: {podSelector: {}}\n")
    code, _out, err = run_cli("check", "--cluster", str(EXAMPLE / "cluster.yaml"), "--policies", str(bomb),
                              "--flows", str(EXAMPLE / "flows.jsonl"))
    assert code == 2 and "aliases expand" in _one_line(err) and str(bomb) in err


def test_non_string_annotations_are_refused(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n"
                      "  annotations: {a: [1, 2]}\nspec: {podSelector: {}}\n")
    code, _out, err = run_cli("check", "--cluster", str(EXAMPLE / "cluster.yaml"), "--policies", str(policy),
                              "--flows", str(EXAMPLE / "flows.jsonl"))
    assert code == 2 and "metadata.annotations must map strings to strings" in _one_line(err)


@pytest.mark.parametrize("name", ["../x", "Upper", "a" * 254])
def test_snapshot_names_that_are_not_dns_names_are_refused(tmp_path: Path, name: str) -> None:
    snapshot = tmp_path / "cluster.yaml"
    snapshot.write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: '{name}', namespace: shop}}\n"
                        "status: {podIP: 10.244.1.9}\n")
    code, _out, err = run_cli("check", "--cluster", str(snapshot), "--policies", str(EXAMPLE / "policies"),
                              "--flows", str(EXAMPLE / "flows.jsonl"))
    assert code == 2 and "metadata.name" in _one_line(err) and "is not a valid name" in err


# --- properties: whatever the line, the parser returns a Flow or raises FlowError, nothing else ---------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)
_records = st.fixed_dictionaries(
    {}, optional={key: _json_values | st.just(value) for key, value in GOOD.items()}).map(
    lambda record: json.dumps(record).encode())


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), _records))
def test_any_line_is_a_flow_or_a_flow_error(line: bytes) -> None:
    try:
        flow = parse_flow(line, latest=at("10:30:00") + 86400)
    except FlowError as exc:
        assert "\n" not in exc.message
        return
    assert 1 <= flow.dst_port <= 65535 and flow.protocol in ("TCP", "UDP", "SCTP")
    assert flow.ts is None or 946_684_800 <= flow.ts <= at("10:30:00") + 86400
    assert all(v is None or 0 <= v < 2**63 for v in (flow.packets, flow.bytes))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_records, min_size=1, max_size=3))
def test_import_of_any_lines_is_all_or_nothing_and_the_store_stays_readable(
        tmp_path: Path, lines: list[bytes]) -> None:
    store_url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    before = edge_count(store_url) if (tmp_path / "fuzz.db").exists() else 0
    code, _out, err = run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--flows", str(path))
    if code == 2:
        _one_line(err)
        assert not (tmp_path / "fuzz.db").exists() or edge_count(store_url) == before
    else:
        assert code == 0, err
    assert run_cli("flows", "--db", store_url).exit_code == 0


# --- a store an earlier version poisoned: readers skip the bad rows, say so once, and keep working -----


def test_a_store_holding_out_of_range_values_is_read_without_crashing(store_url: str, tmp_path: Path) -> None:
    flows = tmp_path / "good.jsonl"
    flows.write_bytes(b"\n".join(_line(src_port=port, dst_port=80 + port % 3) for port in range(1, 7)) + b"\n")
    assert run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--flows", str(flows)).exit_code == 0
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:  # what issue #10's reproductions left in stores before validation
        ids = [row[0] for row in conn.execute(sa.select(t.edges.c.id).order_by(t.edges.c.id))]
        assert len(ids) >= 2
        conn.execute(sa.update(t.edges).where(t.edges.c.id == ids[0]).values(first_seen=float("inf")))
        conn.execute(sa.update(t.edges).where(t.edges.c.id == ids[1]).values(connections=-1000))
        conn.execute(sa.update(t.edge_samples).values(ts=1e300))
    engine.dispose()
    for command in (["flows"], ["status"], ["export"], ["export", "--explain"]):
        result = run_cli(*command, "--db", store_url)
        assert result.exception is None or isinstance(result.exception, SystemExit), (command, result.exception)
        assert "Traceback" not in result.output and result.exit_code in (0, 1), (command, result.output)
    assert edge_count(store_url) == len(ids)  # nothing deleted: the rows are skipped, not repaired
