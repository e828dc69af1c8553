"""A scan's findings wait for capture: a connection opened while the tables were read is counted once.

The kernel tables are replaced by a fixed list (``_read``): this stands in for a conntrack dump that
takes seconds on a large node, during which a pod opens a connection whose SYN capture has read but
not yet taken at a cut. The real tables are read in tests/test_collect_established.py.
"""

from __future__ import annotations

from netpol_gen.collector.established import HOLD_CUTS, EstablishedScanner
from netpol_gen.ingest.established import FourTuple
from netpol_gen.model.flows import Flow

OLD: FourTuple = ("10.0.0.1", 40000, "10.0.1.1", 5432)  # open before capture started
NEW: FourTuple = ("10.0.0.1", 40001, "10.0.1.1", 5432)  # opened during the scan: capture saw its SYN


def _scanner(open_now: list[FourTuple]) -> EstablishedScanner:
    scanner = EstablishedScanner(["conntrack"])
    scanner._read = lambda: [("conntrack", conn, (conn,)) for conn in open_now]  # type: ignore[method-assign]
    return scanner


def _syn(conn: FourTuple, ts: float) -> Flow:
    return Flow(conn[0], conn[2], conn[3], "TCP", conn[1], ts)


def _reported(due: list[tuple[float, dict[str, list[Flow]]]]) -> list[tuple[float, int | None]]:
    return [(at, flow.src_port) for at, by_source in due for flows in by_source.values() for flow in flows]


def test_a_connection_capture_learns_at_a_later_cut_is_not_reported_by_the_scan() -> None:
    scanner = _scanner([OLD, NEW])
    assert scanner.scan(100.0, None) == {"conntrack": 2}
    assert _reported(scanner.captured([])) == []  # the cut in progress: nothing due yet
    assert _reported(scanner.captured([_syn(NEW, 100.2)])) == [(100.0, OLD[1])]  # HOLD_CUTS == 2
    assert _reported(scanner.captured([])) == [] and _reported(scanner.release()) == []


def test_findings_still_held_when_capture_stops_are_released_not_lost() -> None:
    scanner = _scanner([OLD])
    scanner.scan(100.0, None)
    for _ in range(HOLD_CUTS - 1):
        assert _reported(scanner.captured([])) == []
    assert _reported(scanner.release()) == [(100.0, OLD[1])]
    # and the next scan does not report it again while it stays open
    scanner.scan(400.0, None)
    assert _reported(scanner.release()) == []
