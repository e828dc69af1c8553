"""The README's "Bad input and faults" table promises that every row is backed by a test: each test it
names must exist, so a renamed or deleted test cannot leave a row claiming what nothing checks."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_NAMED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`|`::(\w+)`")


def _rows() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Bad input and faults\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| input")]


def _tests(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_row_of_the_faults_table_names_tests_that_exist() -> None:
    rows = _rows()
    assert len(rows) >= 10
    for row in rows:
        named, current = [], None
        for path, name, same_file in _NAMED.findall(row):
            current = path or current
            assert current is not None, f"a row names ::{same_file} before any file: {row}"
            named.append((current, name or same_file))
        assert named, f"a row without a test: {row}"
        for path, name in named:
            assert name in _tests(path), f"{path}::{name} (README row: {row[:60]}...)"
