"""The YAML renderer's fast representer against PyYAML's own safe dumper: for any policy-shaped
document (nested dicts and lists of strings, ints, booleans, None and floats, keys of mixed types,
the same object reached twice, one-line ``Inline`` lists), ``render_yaml`` writes the bytes PyYAML's
generic safe representer and resolver write through the same emitter (libyaml's when present, as
before the speed-up) with the same settings. Stands in for a reviewer diffing
exports of the same store before and after the speed-up."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from netpol_gen.synthesizer.render import Inline, render_yaml


class _Reference(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """The generic representer and resolver on the renderer's emitter, with the one representer it adds."""


_Reference.add_representer(Inline, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))

# strings YAML would read as something else unless quoted, and ones needing escapes
_TRICKY = st.sampled_from(["", "yes", "no", "null", "~", "123", "0x1F", "1e3", "-", "a: b", "#x", "- x", "'q'",
                           '"q"', "line\nbreak", "tab\there", "caf\u00e9", "10.0.0.1/32", "*.example.com", " x "])
_SCALARS = st.one_of(st.text(max_size=12), _TRICKY, st.integers(), st.booleans(), st.none(),
                     st.floats(allow_nan=False))


def _documents(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(leaves, lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), _TRICKY), children, max_size=4),
        st.lists(st.text(max_size=6), max_size=3).map(Inline),
    ), max_leaves=20)


def _reference(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Reference, sort_keys=True, default_flow_style=False, width=1 << 16)


@settings(max_examples=300, deadline=None)
@example([{"metadata": []}, {"metadata": {"annotations": "x"}}])  # hypothesis found these: metadata not a mapping
@given(st.lists(st.dictionaries(st.text(max_size=8), _documents(_SCALARS), max_size=5), max_size=3))
def test_same_bytes_as_the_generic_safe_dumper(documents: list[dict[str, Any]]) -> None:
    assert render_yaml(documents) == "---\n".join(_reference(d) for d in documents)


def test_an_object_reached_twice_is_an_alias_as_before() -> None:
    shared = {"matchLabels": {"app": "web"}}
    document = {"spec": {"a": shared, "b": [shared, shared]}, "x": {1: "int key", "s": "str key"}}
    rendered = render_yaml([document])
    assert "&id001" in rendered and "*id001" in rendered
    assert rendered == _reference(document)
