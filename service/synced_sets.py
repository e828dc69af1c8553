"""Shadow sets kept in step with a source rather than added once: the policies in force (watched from
the Kubernetes API by ``serve --in-force``) and a directory or ConfigMap a GitOps user edits.

A new state of the source replaces the set's documents in the store (the same set: what it denied so
far stays), so every judge, in any process, reloads it before its next batch; a state equal to the
stored one writes nothing, which makes several ``serve`` replicas publishing the same state harmless.
A state the evaluator cannot read is refused whole (PolicyError naming the document) and the set
keeps its last good state: a half-read set would judge with policies missing.

A directory (``serve --shadow-dir NAME=DIR``) is read again every few seconds: its manifest files, as
``shadow add`` reads them, so a ConfigMap mounted as a volume (the kubelet swaps its files in at once)
works as well as a checkout that a GitOps controller updates. Polling, not inotify: a mounted
ConfigMap changes by a symlink swap that file watches miss, and a few small files cost nothing to read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import sqlalchemy as sa

from netpol_gen.errors import InputError, PolicyError
from netpol_gen.model.documents import Document, load_documents
from netpol_gen.service.shadow import check_name, validate
from netpol_gen.store.db import Store
from netpol_gen.store.shadow import IN_FORCE, replace_set

log = logging.getLogger("netpol_gen.serve")


def sync_set(store: Store, name: str, source: str, documents: Sequence[Document], *,
             may_be_empty: bool = False) -> bool:
    """Make set ``name`` hold ``documents``; False when it did already. ``may_be_empty``: no policy is
    a state (nothing is in force), not a mistake."""
    check_name(name)
    if documents or not may_be_empty:
        validate(documents)
    return replace_set(store, name, source, [{"where": d.where, "obj": d.obj} for d in documents])


def sync_in_force(store: Store, source: str, documents: Sequence[Document]) -> bool:
    """The policies in force as set :data:`IN_FORCE`."""
    return sync_set(store, IN_FORCE, source, documents, may_be_empty=True)


class DirectoryWatch:
    """Set ``name`` kept in step with the policy files in ``directory``, looked at every ``every`` seconds."""

    def __init__(self, store: Store, name: str, directory: str, every: float = 10.0) -> None:
        self.store, self.name, self.directory, self.every = store, name, directory, every
        self.problem: str | None = None  # why the latest state was not taken (one line), None when it was
        self.looks = 0  # completed looks, for wait_for
        self._last: list[Document] | str | None = None  # the latest state seen (or the error reading it)
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def look(self) -> bool:
        """Read the directory once; True when the set changed. A good state is compared with the store's
        every time (so a set removed by hand comes back: the directory defines it); a state refused
        before is not tried again (a bad commit is logged once, not at every look)."""
        try:
            state: list[Document] | str = list(load_documents([self.directory], PolicyError))
        except InputError as exc:
            state = exc.message
        if state == self._last and self.problem is not None:
            return False
        try:
            if isinstance(state, str):
                raise PolicyError(state)
            changed = sync_set(self.store, self.name, f"directory {self.directory}", state)
        except InputError as exc:
            self._last, self.problem = state, exc.message
            log.warning("shadow set %s keeps its last state: %s", self.name, exc.message)
            return False
        except sa.exc.SQLAlchemyError as exc:  # the store unreachable: the next look tries again
            log.warning("shadow set %s not updated: %s", self.name, str(exc).splitlines()[0])
            return False
        self._last, self.problem = state, None
        if changed:
            log.info("shadow set %s: %d policies from %s", self.name, len(state), self.directory)
        return changed

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"shadow-dir-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def wait_for(self, looks: int, timeout: float) -> bool:
        """Wait until ``looks`` looks were completed."""
        with self._changed:
            return self._changed.wait_for(lambda: self.looks >= looks, timeout)

    def _run(self) -> None:
        while not self._stopping.wait(self.every):
            self.look()
            with self._changed:
                self.looks += 1
                self._changed.notify_all()
