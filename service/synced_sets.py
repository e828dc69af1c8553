"""Shadow sets kept in step with a source rather than added once: the policies in force (watched from
the Kubernetes API by ``serve --in-force``) and a directory or ConfigMap a GitOps user edits.

A ConfigMap (``serve --shadow-configmap NAMESPACE/NAME``, watched through the API) holds one set per key:
the key, less a ``.yaml``/``.yml``/``.json`` suffix, is the set's name, its value the policy manifests. A
key removed (or the whole ConfigMap deleted) removes its set; a key whose value the evaluator cannot read
keeps that set's last good state (logged once), the other keys being taken.

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
from collections.abc import Mapping, Sequence
from pathlib import Path

import sqlalchemy as sa

from netpol_gen.errors import InputError, PolicyError
from netpol_gen.model.documents import Document, documents_in, load_documents
from netpol_gen.names import IN_FORCE
from netpol_gen.service.shadow import check_name, validate
from netpol_gen.store.db import Store
from netpol_gen.store.shadow import ShadowSetError, list_sets, remove_set, replace_set

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


SUFFIXES = (".yaml", ".yml", ".json")


def set_name_of(key: str) -> str:
    """The shadow set a ConfigMap key stands for: the key less its manifest suffix."""
    for suffix in SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


class ConfigMapSets:
    """The sets of one ConfigMap, kept in step with each state :meth:`take` is given (its ``data``)."""

    def __init__(self, store: Store, namespace: str, name: str) -> None:
        self.store = store
        self.source = f"configmap {namespace}/{name}"
        self.problems: dict[str, str] = {}  # key -> why its latest value was not taken
        self._refused: dict[str, str] = {}  # key -> the value refused (logged once)

    def take(self, data: Mapping[str, str]) -> list[str]:
        """Make the store's sets match ``data``; the names of the sets changed or removed."""
        changed = []
        wanted: set[str] = set()
        for key, text in sorted(data.items()):
            name = set_name_of(key)
            wanted.add(name)
            if self._refused.get(key) == text:
                continue
            try:
                if name == IN_FORCE:
                    raise PolicyError(f"{IN_FORCE} is the policies in force's (--in-force)")
                documents = list(documents_in(text, Path(f"{self.source}/{key}"), PolicyError))
                if sync_set(self.store, name, f"{self.source} key {key}", documents):
                    changed.append(name)
            except InputError as exc:
                self._refused[key], self.problems[key] = text, exc.message
                log.warning("shadow set %s keeps its last state: %s", name, exc.message)
                continue
            self._refused.pop(key, None)
            self.problems.pop(key, None)
        with self.store.reading() as conn:
            gone = [s.name for s in list_sets(conn) if s.source.startswith(f"{self.source} key ")
                    and s.name not in wanted]
        for name in gone:
            try:
                remove_set(self.store, name)
            except ShadowSetError:  # another serve replica removed it first
                continue
            changed.append(name)
        if changed:
            log.info("shadow sets from %s: %s", self.source, ", ".join(changed))
        return changed
