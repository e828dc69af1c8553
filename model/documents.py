"""Reading Kubernetes objects from files the way kubectl writes and accepts them.

A path may be a file or a directory (its *.yaml, *.yml and *.json files, sorted, not recursive);
a file may hold JSON, multi-document YAML, or ``kind: List`` wrappers (as ``kubectl get -o yaml``
writes), which are flattened. Every object comes with where it was found, ``file:doc N``, so that
errors name the document.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from netpol_gen.errors import InputError
from netpol_gen.gc_pause import collector_paused

SUFFIXES = (".yaml", ".yml", ".json")

# libyaml makes large snapshots load several times faster; the pure-Python loader is the fallback
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_FILE_BYTES = 512 << 20  # a snapshot of 100k pods is ~100 MB; larger is not a manifest
MAX_ALIAS_EXPANSION = 1_000_000  # nodes that YAML aliases may add to one document


@dataclass(frozen=True, slots=True)
class Document:
    where: str  # "file:doc N" or "file:doc N item M"
    obj: dict[str, Any]


def expand_paths(paths: Iterable[str], error: type[InputError]) -> list[Path]:
    """Files named directly, plus the Kubernetes manifest files inside named directories."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise error("no such file or directory", where=str(path))
    return files


def read_documents(path: Path, error: type[InputError]) -> Iterator[Document]:
    """Objects in one file, ``List`` items flattened; empty documents are skipped."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise error(f"larger than {MAX_FILE_BYTES >> 20} MiB, not a manifest", where=str(path))
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read: {exc}", where=str(path)) from None
    return documents_in(text, path, error)


def documents_in(text: str, path: Path, error: type[InputError]) -> Iterator[Document]:
    """Objects in ``text``, read as the file ``path`` would be (its suffix says JSON; messages name it):
    also a ConfigMap's value, named by its key."""
    for number, doc in enumerate(_parse(text, path, error), 1):
        where = f"{path}:doc {number}"
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise error(f"expected a Kubernetes object (a mapping), got {type(doc).__name__}", where=where)
        kind = doc.get("kind")
        if kind is not None and not isinstance(kind, str):
            raise error(f"kind must be a string, got {kind!r}", where=where)
        if kind == "List" or (kind and kind.endswith("List") and "items" in doc):
            items = doc.get("items") or []
            if not isinstance(items, list):
                raise error("List.items must be a list", where=where)
            for index, item in enumerate(items):
                item_where = f"{where} item {index}"
                if not isinstance(item, dict):
                    raise error("List item is not a Kubernetes object", where=item_where)
                yield Document(item_where, _with_list_kind(item, doc))
        else:
            yield Document(where, doc)


def _with_list_kind(item: dict[str, Any], wrapper: dict[str, Any]) -> dict[str, Any]:
    """Items of a typed list (``PodList`` from the API) omit their kind; restore it."""
    kind = wrapper.get("kind", "")
    if "kind" not in item and kind.endswith("List") and kind != "List":
        return {**item, "kind": kind[: -len("List")]}
    return item


class AliasBomb(ValueError):
    """A YAML document whose aliases expand far beyond its size (a "billion laughs")."""


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes in ``node`` with every alias expanded, counted once per distinct node (memoised)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a recursive alias counts once instead of forever
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, sizes) for item in node.value)
    else:
        size = 1
    sizes[id(node)] = size
    return size


_STR, _SEQ, _MAP, _MERGE = (f"tag:yaml.org,2002:{kind}" for kind in ("str", "seq", "map", "merge"))


class _Loader(_BaseLoader):
    """The safe loader with its tag resolution memoised: resolving runs the implicit resolvers'
    regular expressions in Python for every scalar, and a snapshot repeats the same keys and values
    (``name``, ``labels``, ``TCP``) hundreds of thousands of times."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._resolved: dict[tuple[Any, Any, Any], str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        key = (kind, value, implicit)
        found = self._resolved.get(key)
        if found is None:
            found = self._resolved[key] = super().resolve(kind, value, implicit)
        return found


def _construct(loader: Any, node: yaml.Node) -> Any:
    """The Python value of a node of a document without anchors, as ``construct_document`` gives it:
    strings, lists and plain mappings directly, everything else (ints, booleans, timestamps, other
    tags, merge keys, unhashable keys, with their errors) by the loader itself. Direct, because the
    loader's generic construction costs several calls per node; without anchors no node is shared,
    so no memo of constructed nodes is needed."""
    tag = node.tag
    if tag == _STR and isinstance(node, yaml.ScalarNode):
        return node.value
    if tag == _SEQ and isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item) for item in node.value]
    if tag == _MAP and isinstance(node, yaml.MappingNode) and all(
            key.tag == _STR and isinstance(key, yaml.ScalarNode) for key, _ in node.value):
        return {key.value: _construct(loader, value) for key, value in node.value}
    return loader.construct_object(node, deep=True)


def _load_yaml(text: str) -> list[Any]:
    """Every document of ``text``, refusing one whose aliases would add more than ``MAX_ALIAS_EXPANSION``
    nodes: the loader itself shares aliased objects, but everything after it (validation, canonical
    forms, JSON) walks the expanded tree, so a 1 KB bomb would cost minutes and all memory. A text
    without ``&`` has no anchor, so no alias (an alias names an anchor; an undefined one is an error
    of the loader): it needs no count and is constructed directly (:func:`_construct`)."""
    loader = _Loader(text)
    anchors = "&" in text
    documents: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if not anchors:
                documents.append(_construct(loader, node))
                continue
            sizes: dict[int, int] = {}
            extra = _expanded_size(node, sizes) - len(sizes)
            if extra > MAX_ALIAS_EXPANSION:
                raise AliasBomb(f"aliases expand document {len(documents) + 1} by more than "
                                f"{MAX_ALIAS_EXPANSION:,} nodes")
            documents.append(loader.construct_document(node))
    finally:
        loader.dispose()
    return documents


def _parse(text: str, path: Path, error: type[InputError]) -> list[Any]:
    with collector_paused():
        return _parse_text(text, path, error)


def _parse_text(text: str, path: Path, error: type[InputError]) -> list[Any]:
    stripped = text.lstrip()
    if path.suffix == ".json" or stripped.startswith("{"):
        try:
            return [json.loads(text)] if stripped else []
        except json.JSONDecodeError as exc:
            raise error(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", where=str(path)) from None
    try:
        return _load_yaml(text)
    except AliasBomb as exc:
        raise error(f"invalid YAML: {exc}", where=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"invalid YAML: {line}{problem}", where=str(path)) from None


def load_documents(paths: Iterable[str], error: type[InputError]) -> Iterator[Document]:
    for path in expand_paths(paths, error):
        yield from read_documents(path, error)
