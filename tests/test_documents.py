"""Manifests read by the fast YAML path (libyaml's parser, tags resolved once per distinct scalar,
documents without anchors constructed directly, the garbage collector paused) come out exactly as
PyYAML's pure-Python ``SafeLoader`` reads them: it stands in for every snapshot and policy file a user
passes, including the YAML 1.1 corners (unquoted ``yes``, timestamps, merge keys, other tags,
non-string keys) and documents with anchors, which keep the loader's own construction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netpol_gen.errors import SnapshotError
from netpol_gen.model.documents import read_documents

SCALARS = st.one_of(
    st.sampled_from(("yes", "no", "on", "null", "~", "1", "0x1f", "1e3", "2024-01-01", "2024-01-01T00:00:00Z",
                     "TCP", "a: b", "- x", "&a", "*a", "", " ", "é", "'q'", '"d"')),
    st.text(max_size=8), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=20)

HAND_WRITTEN = (
    "a: yes\nb: 2024-01-01T10:00:00Z\nc: 0o17\nd: .inf\ne: {1: one, 2.5: x, null: n, true: t}\n",
    "base: &b {x: 1, y: 2}\nitem:\n  <<: *b\n  y: 3\nlist: [*b, *b]\n",
    "plain: {<<: {k: v}, own: 1}\n",
    "s: !!set {a, b}\nbin: !!binary aGVsbG8=\nstr: !!str 12\n",
    "---\nkind: Pod\n---\n---\nkind: Service\nspec: {ports: [{port: 80}]}\n",
)


def _read(tmp_path: Path, text: str) -> list[Any]:
    path = tmp_path / "doc.yaml"
    path.write_text(text, encoding="utf-8")
    return [document.obj for document in read_documents(path, SnapshotError)]


def _reference(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=yaml.SafeLoader) if doc is not None]


@pytest.mark.parametrize("text", HAND_WRITTEN)
def test_hand_written_corners_read_as_pyyaml_reads_them(tmp_path: Path, text: str) -> None:
    assert _read(tmp_path, text) == _reference(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.dictionaries(st.text(min_size=1, max_size=6), VALUES, min_size=1, max_size=4), min_size=1,
                max_size=3), st.booleans())
def test_generated_documents_read_as_pyyaml_reads_them(tmp_path: Path, docs: list[dict[str, Any]], flow: bool) -> None:
    # explicit start: a file beginning with "{" is read as JSON
    text = yaml.safe_dump_all(docs, default_flow_style=flow, allow_unicode=True, explicit_start=True)
    assert _read(tmp_path, text) == _reference(text)


def test_an_unhashable_key_is_the_loaders_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match=r"invalid YAML: line 1: found unhashable key"):
        _read(tmp_path, "? [1]\n: 2\n")
