"""Shadow sets kept in step with a source rather than added once: the policies in force (watched from
the Kubernetes API by ``serve --in-force``) and a directory or ConfigMap a GitOps user edits.

A new state of the source replaces the set's documents in the store (the same set: what it denied so
far stays), so every judge, in any process, reloads it before its next batch; a state equal to the
stored one writes nothing, which makes several ``serve`` replicas publishing the same state harmless.
A state the evaluator cannot read is refused whole (PolicyError naming the document) and the set
keeps its last good state: a half-read set would judge with policies missing.
"""

from __future__ import annotations

from collections.abc import Sequence

from netpol_gen.model.documents import Document
from netpol_gen.service.shadow import check_name, validate
from netpol_gen.store.db import Store
from netpol_gen.store.shadow import replace_set

IN_FORCE = "in-force"  # the set of the policies in force; `shadow add` refuses the name


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
