"""``import --server``: offline captures posted to a central store as a collector posts its intervals.

Each source file becomes one batch of the collector's wire format (:class:`BatchMessage`, with the
cluster view it was attributed against), whose id is the file's digest, the very value a local
``import --db`` records for it: importing a file again, through any server or into the same store
directly, is recognised and counts nothing. Files are read in one :class:`Ingest`, so a connection
seen in the captures of two nodes of one run is counted once, as a local import counts it.

Every file is read, and every batch built, before the first POST: a bad line anywhere is a one-line
error and nothing is posted. Posting retries as a collector's client does (capped, jittered backoff
while the server is unreachable or busy, for ``Retry.deadline``); if it still fails, the capture files
are the spool: running the same import again posts what is missing and skips what arrived.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from netpol_gen.ingest.flowtrack import Hints
from netpol_gen.ingest.pipeline import Ingest
from netpol_gen.ingest.sources import READERS, ReadProgress, Source, file_digest
from netpol_gen.model.aggregate import Batch
from netpol_gen.model.cluster import Cluster
from netpol_gen.service.client import ServerError, StoreClient
from netpol_gen.service.wire import BatchMessage, ClusterView

SOURCE = "import"
SOURCE_MAX = 200  # the wire's bound on a batch's source is 253; serve appends " as USER"


@dataclass(frozen=True)
class Prepared:
    source: Source
    batch_id: str
    flows: int
    batch: Batch


@dataclass
class PostReport:
    posted: list[str] = field(default_factory=list)  # written by the server
    known: list[str] = field(default_factory=list)  # the server had this batch id already
    flows: int = 0
    duplicates: int = 0
    edges: int = 0


def prepare(cluster: Cluster, sources: list[Source], progress: ReadProgress, hints: Hints) -> list[Prepared]:
    """One batch per source (InputError naming the file and line on the first bad one)."""
    digests = {source: file_digest(source.path, source.kind).kinded for source in sources}
    ingest = Ingest(cluster)
    prepared, seen = [], set()
    for source in sources:
        if digests[source] in seen:
            continue  # the same content twice in one run is posted once
        seen.add(digests[source])
        before = ingest.stats.flows
        READERS[source.kind](source, ingest, progress, hints)
        prepared.append(Prepared(source, digests[source], ingest.stats.flows - before, ingest.take_batch()))
    return prepared


def post_prepared(client: StoreClient, cluster: Cluster, prepared: list[Prepared]) -> PostReport:
    """POST each batch with its cluster view; ServerError (saying what arrived) when one fails for good."""
    report = PostReport()
    view = ClusterView.of(cluster)
    for item in prepared:
        name = f"{SOURCE}:{os.path.basename(item.source.path)}"[:SOURCE_MAX]
        message = BatchMessage(item.batch_id, item.batch, item.flows, name, view)
        try:
            written = client.post(message)
        except ServerError as exc:
            done = f"{len(report.posted) + len(report.known)} of {len(prepared)} files arrived"
            raise ServerError(f"{exc.what} ({done}; run the same import again to post the rest)",
                              where=f"{exc.where} ({item.source.path})", permanent=exc.permanent,
                              status=exc.status) from None
        (report.posted if written else report.known).append(item.source.path)
        report.flows += item.flows
        report.edges += len(item.batch.edges)
    return report
