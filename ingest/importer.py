"""Offline import: files in, one transaction out.

Sources are recorded by the SHA-256 of their kind and content, so importing a file again (under any
name) adds nothing, while the same bytes read as another kind (flows, then a pcap) are another import.
Everything is read and aggregated before the database is touched; then the cluster view, the edges
and the import records are written in a single transaction, so bad input found on
the last line, or a crash while writing, leaves the store exactly as it was.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from netpol_gen.gc_pause import collector_paused
from netpol_gen.ingest.flowtrack import Hints
from netpol_gen.ingest.pipeline import Ingest
from netpol_gen.ingest.sources import READERS, Digest, QuietProgress, ReadProgress, Source, file_digest
from netpol_gen.model.cluster import Cluster
from netpol_gen.service.shadow import ShadowJudge
from netpol_gen.store import schema as t
from netpol_gen.store.db import Store, StoreError
from netpol_gen.store.writer import write_batch, write_cluster


class ImportConflict(StoreError):
    """Another process imported the same file between our look at the store and our commit."""


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the store (same content)
    packets: int = 0
    packets_filtered: bool = False
    flows: int = 0
    duplicates: int = 0
    no_direction: int = 0
    resolved: int = 0  # connections without handshake whose initiator a conntrack/ss dump named
    service_unresolved: int = 0
    unknown_ips: int = 0
    edges_new: int = 0
    edges_updated: int = 0
    dns_names: int = 0


def _known_digests(store: Store, digests: Mapping[Source, Digest]) -> set[str]:
    """The kinded digests of ``digests`` already imported, under either form of the hash."""
    i = t.imports.c
    wanted = {d.kinded for d in digests.values()} | {d.legacy for d in digests.values()}
    with store.reading() as conn:
        rows = set(conn.execute(sa.select(i.content_hash, i.kind).where(i.content_hash.in_(wanted))))
    return {digest.kinded for source, digest in digests.items()
            if any(row[0] == digest.kinded or row == (digest.legacy, source.kind) for row in rows)}


def import_sources(
    store: Store, cluster: Cluster, sources: Sequence[Source], progress: ReadProgress | None = None,
    hints: Hints | None = None,
) -> ImportReport:
    """Import the ``sources`` not imported before; nothing is written unless all of them read cleanly.

    ``hints`` (:func:`netpol_gen.ingest.dumps.direction_hints` of dumps taken at capture time) name
    the initiator of connections the captures show without a handshake; those are learnt too.

    The cyclic garbage collector is paused throughout (:func:`collector_paused`), not only while the
    files are read: everything read survives until the write, and with the collector back on, the
    allocations of folding the batch and of building the rows set off full collections over that heap
    for nothing (measured on the issue15 preset, 74,818 edges: 17.0 -> 13.0 CPU s).
    """
    with collector_paused():
        return _import(store, cluster, sources, progress or QuietProgress(), hints or {})


def _import(store: Store, cluster: Cluster, sources: Sequence[Source], progress: ReadProgress,
            hints: Hints) -> ImportReport:
    report = ImportReport()
    digests = {source: file_digest(source.path, source.kind) for source in sources}
    known = _known_digests(store, digests)
    ingest = Ingest(cluster)
    records = []
    for source in sources:
        digest = digests[source].kinded
        if digest in known:
            report.skipped.append(source.path)
            continue
        known.add(digest)  # the same content twice in one run is imported once
        before = ingest.stats.flows
        counts = READERS[source.kind](source, ingest, progress, hints)
        report.packets += counts.packets
        report.packets_filtered |= counts.packets_filtered
        report.no_direction += counts.no_direction
        report.resolved += counts.resolved
        report.imported.append(source.path)
        records.append({"content_hash": digest, "source": source.path, "kind": source.kind,
                        "flows": ingest.stats.flows - before, "imported_at": time.time()})
    batch = ingest.take_batch()
    record_shadow = ShadowJudge(store).recorder(batch, cluster)
    try:
        with store.transaction() as conn:
            write_cluster(conn, cluster)
            result = write_batch(conn, batch)
            record_shadow(conn)
            if records:
                conn.execute(sa.insert(t.imports), records)
    except (sa.exc.OperationalError, sa.exc.InternalError) as exc:  # InternalError: PostgreSQL read-only
        refusal = store.refusal(exc)
        if refusal is None:
            raise
        raise refusal from None
    except sa.exc.IntegrityError:
        # the unique content hash: a concurrent import of the same file committed first; this
        # transaction was rolled back whole, so nothing is counted twice
        pending = {record["content_hash"] for record in records}
        raced = _known_digests(store, {s: d for s, d in digests.items() if d.kinded in pending})
        if not raced:
            raise
        paths = ", ".join(str(record["source"]) for record in records if record["content_hash"] in raced)
        raise ImportConflict("already being imported by another process; nothing written by this run "
                             "(run it again: what that process imported is skipped)", where=paths) from None
    stats = ingest.stats
    report.flows, report.duplicates = stats.flows, stats.duplicates
    report.service_unresolved, report.unknown_ips = stats.service_unresolved, len(stats.unknown_ips)
    report.edges_new, report.edges_updated = result.edges_new, result.edges_updated
    report.dns_names = len({name for name, _ in batch.dns})
    return report
