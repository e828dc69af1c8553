"""Reading the files of an import into an :class:`Ingest`: what a local ``import`` does before it writes
the store (:mod:`netpol_gen.ingest.importer`) and ``import --server`` before it posts
(:mod:`netpol_gen.ingest.remote_import`), apart from the store, so that posting loads none of it.

A file is known by the SHA-256 of its kind and content (:func:`file_digest`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Protocol, TypeVar

from netpol_gen.errors import InputError
from netpol_gen.gc_pause import collector_paused
from netpol_gen.ingest.flowtrack import Hints, ResolvedFlow
from netpol_gen.ingest.pipeline import Ingest
from netpol_gen.model.flows import Flow, iter_record_blocks


@dataclass(frozen=True)
class Source:
    path: str
    kind: str  # "flows" (JSONL) or "pcap" (pcap/pcapng)


@dataclass(frozen=True)
class ReadCounts:
    """What a reader saw beyond the flows it fed: packets, and connections of unknown direction.

    ``packets_filtered`` is True when a BPF filter dropped packets before they were counted:
    ``packets`` is then the number that passed the filter.
    """

    packets: int = 0
    packets_filtered: bool = False
    no_direction: int = 0
    resolved: int = 0  # seen without handshake, initiator named by a dump


_R = TypeVar("_R")


class ReadProgress(Protocol):
    """How the caller watches reading: the CLI draws a progress bar, the library stays quiet."""

    def open_binary(self, path: str) -> AbstractContextManager[IO[bytes]]: ...

    def records(self, path: str, records: Iterator[_R]) -> Iterator[_R]: ...


class QuietProgress:
    def open_binary(self, path: str) -> AbstractContextManager[IO[bytes]]:
        try:
            return open(path, "rb")
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", where=path) from None

    def records(self, path: str, records: Iterator[_R]) -> Iterator[_R]:
        return records


def _read_flows(source: Source, ingest: Ingest, progress: ReadProgress, _hints: Hints) -> ReadCounts:
    with progress.open_binary(source.path) as stream, collector_paused():
        ingest.add_records(iter_record_blocks(stream, source.path), source.path)
    return ReadCounts()


def _read_capture(source: Source, ingest: Ingest, progress: ReadProgress, hints: Hints) -> ReadCounts:
    from netpol_gen.ingest.pcap import read_capture  # here: an import of flow files needs no capture decoder

    capture = read_capture(source.path, hints=hints)
    add_flow, add_dns = ingest.add_flow, ingest.add_dns
    for record in progress.records(source.path, capture.records):
        if isinstance(record, Flow):
            add_flow(record)
        elif isinstance(record, ResolvedFlow):
            add_flow(record.flow, record.source)
        else:
            add_dns(record)
    stats = capture.stats
    if stats.packets_read is None:  # tcpdump filtered: only what passed the filter was counted
        return ReadCounts(stats.packets_filtered_in, True, stats.direction_unknown, stats.direction_resolved)
    return ReadCounts(stats.packets_read, False, stats.direction_unknown, stats.direction_resolved)


READERS: dict[str, Callable[[Source, Ingest, ReadProgress, Hints], ReadCounts]] = {
    "flows": _read_flows,
    "pcap": _read_capture,
}


@dataclass(frozen=True)
class Digest:
    """What identifies an imported file: its content under its kind (the same bytes read as a pcap and
    as flows are different imports), plus the content-only hash that older stores recorded."""

    kinded: str
    legacy: str


def file_digest(path: str, kind: str) -> Digest:
    kinded, legacy = hashlib.sha256(f"netpol-gen import {kind}\n".encode()), hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                kinded.update(chunk)
                legacy.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", where=path) from None
    return Digest(kinded.hexdigest(), legacy.hexdigest())
