"""Group commit (``serve`` writes the batches it found queued in one transaction), on SQLite and
PostgreSQL: the store ends exactly as after writing the batches one by one, and each batch id counts
once. Stands in for many collectors posting at once, overlapping on the edges of one workload, and
for a collector's retry landing in the same group as (or a group after) its first delivery."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from netpol_gen.model.aggregate import Batch, DnsSeen, EdgeTotals, Sample
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.store import schema as t
from netpol_gen.store.batches import Delivery, deliver_batch, deliver_batches
from netpol_gen.store.db import open_store

WEB = Identity(IdentityKind.POD, "shop", "Deployment", "web")
API = Identity(IdentityKind.POD, "shop", "Deployment", "api")
OUT = Identity(IdentityKind.EXTERNAL, ip="203.0.113.9")


def _sample(n: int) -> Sample:
    return Sample(1000.0 + n, "10.0.0.1", 40000 + n, "10.0.0.2", 8080, None, None, None, 1, 100)


def _batches(edges: int) -> list[Batch]:
    """Three nodes' batches: all share WEB->API (and edges more than the bulk path's threshold), differ in
    counters, samples, established connections, DNS answers and names."""
    def many(seen: float) -> dict[Any, EdgeTotals]:
        return {(WEB, Identity(IdentityKind.EXTERNAL, ip=f"198.51.100.{n}"), 443, "TCP"):
                EdgeTotals(connections=1, first_seen=seen, last_seen=seen, samples=[_sample(n)]) for n in range(edges)}
    return [
        Batch({(WEB, API, 8080, "TCP"): EdgeTotals(connections=2, first_seen=1010.0, last_seen=1020.0,
                                                  samples=[_sample(1)]), **many(1000.0)},
              {("api.example.com", "203.0.113.9"): DnsSeen(30, 1000.0, 1001.0)}, {OUT: {"api.example.com"}}),
        Batch({(WEB, API, 8080, "TCP"): EdgeTotals(connections=3, packets=5, bytes=500, first_seen=1005.0,
                                                  last_seen=1015.0, samples=[_sample(2), _sample(3)],
                                                  established={"conntrack": 2}),
               (API, OUT, 443, "TCP"): EdgeTotals(connections=1, first_seen=1003.0, last_seen=1003.0,
                                                 samples=[_sample(4)])},
              {("api.example.com", "203.0.113.9"): DnsSeen(60, 999.0, 1000.5)}, {OUT: {"cdn.example.com"}}),
        Batch({(WEB, API, 8080, "TCP"): EdgeTotals(connections=1, first_seen=1030.0, last_seen=1030.0,
                                                  samples=[_sample(5)], established={"conntrack": 1}),
               **many(1040.0)}),
    ]


def _contents(url: str) -> dict[str, set[tuple[Any, ...]]]:
    """Every learnt row, with identities by key instead of ids (ids differ between the two stores)."""
    store = open_store(url)
    try:
        with store.reading() as conn:
            keys = dict(conn.execute(sa.select(t.identities.c.id, t.identities.c.key)).all())
            edges = {row.id: (keys[row.src_id], keys[row.dst_id], row.dst_port, row.protocol)
                     for row in conn.execute(sa.select(t.edges))}
            return {
                "edges": {(*edges[r.id], r.connections, r.packets, r.bytes, r.first_seen, r.last_seen)
                          for r in conn.execute(sa.select(t.edges))},
                "samples": {(*edges[r.edge_id], r.slot, r.ts, r.src_port)
                            for r in conn.execute(sa.select(t.edge_samples))},
                "established": {(*edges[r.edge_id], r.source, r.connections)
                                for r in conn.execute(sa.select(t.edge_established))},
                "dns": {tuple(r) for r in conn.execute(sa.select(t.dns_answers))},
                "names": {(keys[r.identity_id], r.name) for r in conn.execute(sa.select(t.identity_names))},
                "imports": {r.content_hash for r in conn.execute(sa.select(t.imports))},
            }
    finally:
        store.close()


def test_a_group_leaves_the_store_as_the_batches_one_by_one_and_counts_each_id_once(
        store_url: str, tmp_path_factory: Any) -> None:
    batches = _batches(edges=40)
    one_by_one = f"sqlite:///{tmp_path_factory.mktemp('seq') / 'seq.db'}"
    store = open_store(one_by_one)
    try:
        for n, batch in enumerate(batches):
            assert deliver_batch(store, f"b{n}", batch, 1, "test")
    finally:
        store.close()

    store = open_store(store_url)
    try:
        assert deliver_batch(store, "b0", batches[0], 1, "test")  # delivered before the group: skipped in it
        group = [Delivery(f"b{n}", batch, 1, "test") for n, batch in enumerate(batches)]
        assert deliver_batches(store, [*group, group[2]]) == [False, True, True, False]
        assert deliver_batches(store, group) == [False, False, False]
    finally:
        store.close()
    assert _contents(store_url) == _contents(one_by_one)
    web_api = next(e for e in _contents(store_url)["edges"] if e[:2] == (WEB.key, API.key))
    assert web_api[4:] == (6, 5, 500, 1005.0, 1030.0)
