"""The one wire format between collectors, ``netpol-gen serve`` and the remote CLI: JSON made from
the library's own dataclasses, read back into them with every type checked.

The codec is driven by the dataclasses' type hints rather than written per class, so a field added
to :class:`~netpol_gen.model.aggregate.Batch` or to the synthesizer's ``LearnedInputs`` travels
without a second place to update, and the sending and receiving sides can never disagree. Mappings
with non-string keys (a batch's edges are keyed by identity tuples) travel as ``[key, value]``
pairs; fields computed in ``__post_init__`` (``Identity.key``) are not sent but recomputed.

Decoding is validation: anything that is not exactly the declared shape raises :class:`WireError`,
so the server answers 400 instead of writing a malformed batch.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from netpol_gen.errors import InputError
from netpol_gen.model.aggregate import Batch
from netpol_gen.model.cluster import Cluster, EndpointSlice, Namespace, Node, Pod, Service

WIRE_VERSION = 1
BATCH_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # stored in imports.content_hash, 64 characters

_T = TypeVar("_T")


class WireError(InputError):
    """A message that is not what the wire format says."""


@dataclass(frozen=True)
class ClusterView:
    """The cluster objects a batch was attributed against (the store keeps pods, Services, nodes)."""

    namespaces: tuple[Namespace, ...]
    pods: tuple[Pod, ...]
    services: tuple[Service, ...]
    endpoint_slices: tuple[EndpointSlice, ...]
    nodes: tuple[Node, ...]

    @classmethod
    def of(cls, cluster: Cluster) -> ClusterView:
        return cls(tuple(cluster.namespaces.values()), tuple(cluster.pods), tuple(cluster.services),
                   tuple(cluster.endpoint_slices), tuple(cluster.nodes))

    def cluster(self) -> Cluster:
        return Cluster.build(self.namespaces, self.pods, self.services, self.endpoint_slices, self.nodes)


@dataclass(frozen=True)
class BatchMessage:
    """What a collector POSTs: one batch, its id (idempotence), and the cluster view when it changed."""

    batch_id: str
    batch: Batch
    flows: int = 0
    source: str = ""
    cluster: ClusterView | None = None
    version: int = WIRE_VERSION


# --- encoding ------------------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """``value`` as JSON-ready lists, dicts and scalars."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in _fields(type(value))}
    if isinstance(value, Mapping):
        if all(isinstance(key, str) for key in value):
            return {key: encode(item) for key, item in value.items()}
        return [[encode(key), encode(item)] for key, item in value.items()]
    if isinstance(value, list | tuple | set | frozenset):
        items = [encode(item) for item in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    raise TypeError(f"cannot encode {type(value).__name__}")


# --- decoding ------------------------------------------------------------------------------------


@cache
def _fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.init)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fail(where: str, what: str) -> typing.NoReturn:
    raise WireError(what, where=where or "message")


def _scalar(tp: type, data: Any, where: str) -> Any:
    if tp is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    if not isinstance(data, tp) or (tp is int and isinstance(data, bool)):
        _fail(where, f"expected {tp.__name__}, got {type(data).__name__}")
    return data


def _dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        _fail(where, f"expected an object for {cls.__name__}")
    hints = _hints(cls)
    known = {f.name for f in _fields(cls)}
    unknown = set(data) - known
    if unknown:
        _fail(where, f"unknown field(s) for {cls.__name__}: {', '.join(sorted(map(str, unknown)))}")
    values = {}
    for f in _fields(cls):
        if f.name in data:
            values[f.name] = decode(hints[f.name], data[f.name], f"{where}.{f.name}" if where else f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            _fail(where, f"missing field {f.name!r} for {cls.__name__}")
    return cls(**values)


def _mapping(args: tuple[Any, ...], data: Any, where: str) -> dict[Any, Any]:
    key_type, value_type = args
    if key_type is str:
        if not isinstance(data, dict):
            _fail(where, "expected an object")
        return {key: decode(value_type, item, f"{where}[{key!r}]") for key, item in data.items()}
    if data == {}:  # an empty mapping encodes as {} whatever its key type
        return {}
    if not isinstance(data, list):
        _fail(where, "expected a list of [key, value] pairs")
    result = {}
    for i, pair in enumerate(data):
        if not isinstance(pair, list) or len(pair) != 2:
            _fail(f"{where}[{i}]", "expected a [key, value] pair")
        result[decode(key_type, pair[0], f"{where}[{i}].key")] = decode(value_type, pair[1], f"{where}[{i}].value")
    return result


def _sequence(origin: Any, args: tuple[Any, ...], data: Any, where: str) -> Any:
    if not isinstance(data, list):
        _fail(where, "expected a list")
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):  # a fixed-length tuple
        if len(data) != len(args):
            _fail(where, f"expected {len(args)} items")
        return tuple(decode(tp, item, f"{where}[{i}]") for i, (tp, item) in enumerate(zip(args, data, strict=True)))
    items = [decode(args[0], item, f"{where}[{i}]") for i, item in enumerate(data)]
    return items if origin is list else origin(items)


def decode(tp: Any, data: Any, where: str = "") -> Any:
    """``data`` (parsed JSON) as an instance of the type ``tp``; WireError naming the path on mismatch."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        arms = [arm for arm in args if arm is not type(None)]
        for arm in arms[:-1]:
            try:
                return decode(arm, data, where)
            except WireError:
                continue
        return decode(arms[-1], data, where)
    if origin in (dict, Mapping, typing.Mapping):
        return _mapping(args, data, where)
    if origin in (list, tuple, set, frozenset):
        return _sequence(origin, args, data, where)
    if tp is Any:
        return data
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError:
            _fail(where, f"not a {tp.__name__}: {data!r}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass(tp, data, where)
    if tp in (str, int, float, bool):
        return _scalar(tp, data, where)
    raise TypeError(f"cannot decode {tp!r}")


def read(tp: type[_T], data: Any) -> _T:
    """Typed :func:`decode` for the top-level messages."""
    result: _T = decode(tp, data)
    return result


def read_batch(data: Any) -> BatchMessage:
    """A collector's message, with its version and batch id checked."""
    if isinstance(data, dict) and data.get("version", WIRE_VERSION) != WIRE_VERSION:
        raise WireError(f"wire format version {data.get('version')!r}, this server speaks {WIRE_VERSION}")
    message = read(BatchMessage, data)
    if not BATCH_ID.fullmatch(message.batch_id):
        raise WireError("batch_id must be 1-64 characters of A-Z a-z 0-9 . _ : -", where="batch_id")
    if message.flows < 0:
        raise WireError("must not be negative", where="flows")
    return message
