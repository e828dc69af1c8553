"""The block reader of flow files (``iter_record_blocks``, what ``import --flows`` reads with) against the
line-by-line one (``iter_records``): the same records with the same line numbers, and on bad input the
same error naming the same line, wherever the block boundaries fall."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netpol_gen.errors import FlowError
from netpol_gen.model import flows as flows_module
from netpol_gen.model.flows import MAX_LINE, iter_record_blocks, iter_records

GOOD = [b'{"src_ip":"10.0.0.1","dst_ip":"10.0.0.2","dst_port":80,"protocol":"TCP","ts":1700000000.5}',
        b' {"src_ip":"10.0.0.3","dst_ip":"10.0.0.2","dst_port":53,"protocol":"udp","src_port":9}\r']
ODD = [b"", b"  ", b"\x0c", b'{"src_ip":"10.0.0.1"}', b"{", b"[]", GOOD[0] + GOOD[0], GOOD[0] + b"," + GOOD[0],
       b'{"src_ip":"10.0.0.1",', b'"dst_ip":"10.0.0.2","dst_port":80,"protocol":"TCP"}', b"x" * (MAX_LINE - 1),
       b"x" * MAX_LINE, b" " * (MAX_LINE + 3)]


def _read(read: object, data: bytes) -> tuple[list[tuple[int, object]], str | None]:
    """(line number, record) pairs read before the first error, and that error's text."""
    got: list[tuple[int, object]] = []
    try:
        if read is iter_records:
            got.extend(iter_records(io.BytesIO(data), "f.jsonl"))
        else:
            for block in iter_record_blocks(io.BytesIO(data), "f.jsonl"):
                got.extend((block.line(i), record) for i, record in enumerate(block.records))
    except FlowError as exc:
        return got, str(exc)
    return got, None


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.sampled_from(GOOD + ODD), max_size=12), block=st.integers(1, 400),
       terminated=st.booleans())
def test_blocks_read_what_lines_read(lines: list[bytes], block: int, terminated: bool) -> None:
    data = b"\n".join(lines) + (b"\n" if terminated and lines else b"")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flows_module, "BLOCK_BYTES", block)
        assert _read(iter_record_blocks, data) == _read(iter_records, data)


def test_a_line_without_end_is_refused_within_bounded_reads() -> None:
    with pytest.raises(FlowError, match=r"f\.jsonl:line 2: line longer than"):
        list(iter_record_blocks(io.BytesIO(GOOD[0] + b"\n" + b"x" * (4 * MAX_LINE)), "f.jsonl"))
