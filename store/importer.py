"""Offline import: files in, one transaction out.

Sources are recorded by the SHA-256 of their content, so importing a file again (under any name)
adds nothing. Everything is read and aggregated before the database is touched; then the cluster
view, the edges and the import records are written in a single transaction, so bad input found on
the last line, or a crash while writing, leaves the store exactly as it was.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO

import sqlalchemy as sa

from netpol_gen.errors import InputError
from netpol_gen.evaluator.cluster import Cluster
from netpol_gen.evaluator.flows import iter_flows
from netpol_gen.store import schema as t
from netpol_gen.store.db import Store
from netpol_gen.store.ingest import Ingest
from netpol_gen.store.writer import write_batch, write_cluster


@dataclass(frozen=True)
class Source:
    path: str
    kind: str  # "flows" or "pcap": which reader feeds it


@dataclass(frozen=True)
class ReadCounts:
    """What a reader saw beyond the flows it fed: packets, and connections of unknown direction."""

    packets: int = 0
    no_direction: int = 0


Reader = Callable[[Source, Ingest], ReadCounts]


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the store (same content)
    packets: int = 0
    flows: int = 0
    duplicates: int = 0
    no_direction: int = 0
    service_unresolved: int = 0
    unknown_ips: int = 0
    edges_new: int = 0
    edges_updated: int = 0
    dns_names: int = 0


def file_digest(path: str) -> str:
    try:
        with open(path, "rb") as stream:
            return hashlib.file_digest(stream, "sha256").hexdigest()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", where=path) from None


def _open_text(path: str) -> IO[str]:
    try:
        return open(path, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", where=path) from None


def flow_file_reader(open_text: Callable[[str], AbstractContextManager[IO[str]]] = _open_text) -> Reader:
    """A reader for JSONL flow files; ``open_text`` lets the CLI wrap the file in a progress bar."""

    def read(source: Source, ingest: Ingest) -> ReadCounts:
        with open_text(source.path) as stream:
            ingest.add_flows(iter_flows(stream, source.path))
        return ReadCounts()

    return read


def _known_digests(store: Store, digests: Sequence[str]) -> set[str]:
    with store.reading() as conn:
        rows = conn.execute(sa.select(t.imports.c.content_hash).where(t.imports.c.content_hash.in_(digests)))
        return {row[0] for row in rows}


def import_sources(
    store: Store, cluster: Cluster, sources: Sequence[Source], readers: dict[str, Reader]
) -> ImportReport:
    """Import ``sources`` not imported before, reading each with ``readers[source.kind]``."""
    report = ImportReport()
    digests = {source: file_digest(source.path) for source in sources}
    known = _known_digests(store, list(digests.values()))
    ingest = Ingest(cluster)
    records = []
    for source in sources:
        digest = digests[source]
        if digest in known:
            report.skipped.append(source.path)
            continue
        known.add(digest)  # the same content twice in one run is imported once
        before = ingest.stats.flows
        counts = readers[source.kind](source, ingest)
        report.packets += counts.packets
        report.no_direction += counts.no_direction
        report.imported.append(source.path)
        records.append({"content_hash": digest, "source": source.path, "kind": source.kind,
                        "flows": ingest.stats.flows - before, "imported_at": time.time()})
    batch = ingest.take_batch()
    with store.transaction() as conn:
        write_cluster(conn, cluster)
        result = write_batch(conn, batch)
        if records:
            conn.execute(sa.insert(t.imports), records)
    stats = ingest.stats
    report.flows, report.duplicates = stats.flows, stats.duplicates
    report.service_unresolved, report.unknown_ips = stats.service_unresolved, len(stats.unknown_ips)
    report.edges_new, report.edges_updated = result.edges_new, result.edges_updated
    report.dns_names = len({name for name, _ in batch.dns})
    return report
