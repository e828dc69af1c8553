"""Where the store sink writes a batch: a store opened here (``--db``) or a ``netpol-gen serve`` (``--server``).

Both are idempotent by batch id (recorded in the store in the batch's own transaction), so the
sink may retry a batch whose first delivery's outcome it never learnt. Every failure is turned into
:class:`DeliveryError`: the sink spools on it, whatever the transport.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import sqlalchemy as sa

from netpol_gen.errors import InputError
from netpol_gen.model.aggregate import Batch
from netpol_gen.model.cluster import Cluster
from netpol_gen.service.client import Retry, ServerError, StoreClient, trusted
from netpol_gen.service.shadow import ShadowJudge, deliver_judged
from netpol_gen.service.wire import BatchMessage, ClusterView
from netpol_gen.store.db import Store, StoreError, default_url, open_store

# How long one delivery may retry a server before the batch is spooled (the capture goes on meanwhile).
SERVER_RETRY = Retry(deadline=10.0)


class DeliveryError(Exception):
    """The batch was not written: the target is unreachable or refused us (spool and retry later), or
    it ``rejected`` this batch itself (set it aside: it would be refused again)."""

    def __init__(self, what: str, *, rejected: bool = False) -> None:
        super().__init__(what)
        self.rejected = rejected


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class DbTarget:
    """A store opened on first use, and again after a failure (the server may have restarted)."""

    def __init__(self, url: str | None, source: str) -> None:
        self.url, self._source = url or default_url(), source  # the URL shown in logs and metrics
        self._store: Store | None = None
        self._judge: ShadowJudge | None = None

    def write(self, batch_id: str, batch: Batch, flows: int, cluster: Cluster | None) -> bool:
        try:
            if self._store is None or self._judge is None:
                self._store = open_store(self.url)
                self._judge = ShadowJudge(self._store)
            return deliver_judged(self._judge, batch_id, batch, flows, self._source, cluster)
        except (sa.exc.SQLAlchemyError, StoreError, OSError) as exc:
            self.close()
            raise DeliveryError(_first_line(exc)) from exc

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class ServerTarget:
    """POSTs to a store server; the token is read for every delivery (projected tokens rotate)."""

    def __init__(self, url: str, token: Callable[[], str], source: str, retry: Retry = SERVER_RETRY,
                 ca_file: str | None = None) -> None:
        self.url, self._token, self._source, self._retry, self._ca_file = url, token, source, retry, ca_file
        trusted(ca_file)  # a bad --ca-file is a mistake to report now; read again at each delivery (rotation)

    def write(self, batch_id: str, batch: Batch, flows: int, cluster: Cluster | None) -> bool:
        message = BatchMessage(batch_id, batch, flows, self._source, ClusterView.of(cluster) if cluster else None)
        try:
            with StoreClient(self.url, self._token(), retry=self._retry, ca_file=self._ca_file) as client:
                return client.post(message)
        except ServerError as exc:
            raise DeliveryError(_first_line(exc), rejected=exc.rejects_batch) from exc
        except (InputError, httpx.HTTPError, OSError) as exc:  # InputError: the --ca-file became unreadable
            raise DeliveryError(_first_line(exc)) from exc

    def close(self) -> None:
        return
