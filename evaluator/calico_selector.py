"""Calico's selector expressions (``app == 'web' && has(tier)``), parsed once into a predicate over
labels. Grammar and semantics as in Calico's selector reference
(https://docs.tigera.io/calico/latest/reference/resources/networkpolicy#selectors): ``==``, ``!=``,
``in {...}``, ``not in {...}``, ``has(k)``, ``contains``, ``starts with``, ``ends with``, ``!``, ``&&``,
``||``, parentheses, ``all()`` and ``global()``; ``!=`` and ``not in`` hold for a missing key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from netpol_gen.errors import PolicyError

Predicate = Callable[[Mapping[str, str]], bool]

_TOKEN = re.compile(r"""\s*(?:(?P<str>'[^']*'|"[^"]*")|(?P<op>==|!=|&&|\|\||[!(){},])|(?P<word>[A-Za-z0-9_./\-]+))""")


def _tokens(text: str, field: str) -> list[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise PolicyError(f"{field}: cannot parse selector {text!r} at {text[pos:]!r}")
        tokens.append(match.group(match.lastgroup or "word"))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, field: str) -> None:
        self.text, self.field = text, field
        self.tokens = _tokens(text, field)
        self.pos = 0

    def fail(self, what: str) -> PolicyError:
        return PolicyError(f"{self.field}: selector {self.text!r}: {what}")

    def peek(self, offset: int = 0) -> str | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise self.fail(f"expected {expected or 'more'} at token {self.pos + 1}")
        self.pos += 1
        return token

    def string(self) -> str:
        token = self.take()
        if token[:1] not in ("'", '"'):
            raise self.fail(f"expected a quoted value, got {token!r}")
        return token[1:-1]

    def parse(self) -> Predicate:
        if not self.tokens:
            return lambda labels: True  # an empty selector is all()
        predicate = self.disjunction()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()!r}")
        return predicate

    def disjunction(self) -> Predicate:
        terms = [self.conjunction()]
        while self.peek() == "||":
            self.take()
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else (lambda labels: any(t(labels) for t in terms))

    def conjunction(self) -> Predicate:
        terms = [self.unary()]
        while self.peek() == "&&":
            self.take()
            terms.append(self.unary())
        return terms[0] if len(terms) == 1 else (lambda labels: all(t(labels) for t in terms))

    def unary(self) -> Predicate:
        token = self.peek()
        if token == "!":
            self.take()
            inner = self.unary()
            return lambda labels: not inner(labels)
        if token == "(":
            self.take()
            inner = self.disjunction()
            self.take(")")
            return inner
        return self.term()

    def term(self) -> Predicate:
        word = self.take()
        if word in ("all", "global") and self.peek() == "(":
            self.take("(")
            self.take(")")
            return lambda labels: True  # global() selects non-namespaced endpoints: every pod here
        if word == "has" and self.peek() == "(":
            self.take("(")
            key = self.take()
            self.take(")")
            return lambda labels: key in labels
        key, op = word, self.take()
        if op == "==":
            value = self.string()
            return lambda labels: labels.get(key) == value
        if op == "!=":
            value = self.string()
            return lambda labels: labels.get(key) != value
        if op == "not" and self.peek() == "in":
            self.take()
            values = self.string_set()
            return lambda labels: labels.get(key) not in values
        if op == "in":
            values = self.string_set()
            return lambda labels: labels.get(key) in values
        if op == "contains":
            value = self.string()
            return lambda labels: value in labels.get(key, "\0") and key in labels
        if op in ("starts", "ends") and self.peek() == "with":
            self.take()
            value = self.string()
            if op == "starts":
                return lambda labels: key in labels and labels[key].startswith(value)
            return lambda labels: key in labels and labels[key].endswith(value)
        raise self.fail(f"unknown operator {op!r}")

    def string_set(self) -> frozenset[str]:
        self.take("{")
        values = set()
        while self.peek() != "}":
            values.add(self.string())
            if self.peek() == ",":
                self.take()
        self.take("}")
        return frozenset(values)


def parse_selector(text: object, field: str) -> Predicate:
    """A predicate over labels; PolicyError naming ``field`` when ``text`` is no valid selector."""
    if text is None:
        return lambda labels: True
    if not isinstance(text, str):
        raise PolicyError(f"{field} must be a string (a Calico selector expression)")
    return _Parser(text, field).parse()
