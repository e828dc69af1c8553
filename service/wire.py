"""The one wire format between collectors, ``netpol-gen serve`` and the remote CLI: JSON made from
the library's own dataclasses, read back into them by msgspec with every field checked.

The declared schema is the dataclasses themselves: their type hints carry the bounds of
:mod:`netpol_gen.model.bounds` (ports, counts, timestamps, Kubernetes names), so a field added to
:class:`~netpol_gen.model.aggregate.Batch` or to the synthesizer's ``LearnedInputs`` travels, and is
validated, without a second place to update. Mappings with non-string keys (a batch's edges are
keyed by identity tuples) travel as ``[key, value]`` pairs (:class:`BatchBody`); fields computed in
``__post_init__`` (``Identity.key``) are not sent but recomputed.

Decoding is validation, in one pass over the bytes: anything that is not exactly the declared shape
and within its bounds raises :class:`WireError`, so the server answers 400 (never 500) instead of
writing a value that would poison the store, and the client never retries it. (A collector's batch
is read by a quick schema that checks each distinct identity once; a body it refuses is read again
by the declared one, so the error is the same.)
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Annotated, Any, Generic, TypeVar, get_type_hints

import msgspec

from netpol_gen.errors import InputError
from netpol_gen.model.aggregate import Batch, DnsSeen, EdgeTotals
from netpol_gen.model.bounds import AddressText, Count, DestinationPort, DnsName, Protocol, horizon
from netpol_gen.model.cluster import Cluster, EndpointSlice, Namespace, Node, Pod, Service
from netpol_gen.model.flows import schema_problem
from netpol_gen.model.identity import Identity

WIRE_VERSION = 1
BATCH_ID = r"^[A-Za-z0-9._:-]{1,64}$"  # stored in imports.content_hash, 64 characters
# How long an idle HTTP connection lives, on each side of the protocol: clients drop one after
# KEEPALIVE_EXPIRY seconds, serve after IDLE_TIMEOUT, clearly longer, so the client is the side that
# closes an idle connection, never the server under a request just sent on it (httpx's and uvicorn's
# defaults are both 5 s: a request sent as the server's timer fired failed with RemoteProtocolError)
KEEPALIVE_EXPIRY = 15.0
IDLE_TIMEOUT = int(2 * KEEPALIVE_EXPIRY)

_T = TypeVar("_T")
_I = TypeVar("_I")  # how a batch body holds identities


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


@cache
def _fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.init)


def encode(value: Any) -> Any:
    """``value`` as JSON-ready lists, dicts and scalars."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Batch):
        return encode(BatchBody.of(value))
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


@dataclass(frozen=True)
class BatchBody(Generic[_I]):
    """The wire shape of a :class:`Batch`: its identity-keyed mappings as ``[key, value]`` pairs.
    ``BatchBody[Identity]`` is the declared schema; ``BatchBody[_WireIdentity]`` the quick one."""

    edges: tuple[tuple[tuple[_I, _I, DestinationPort, Protocol], EdgeTotals], ...] = ()
    dns: tuple[tuple[tuple[DnsName, AddressText], DnsSeen], ...] = ()
    names: tuple[tuple[_I, tuple[DnsName, ...]], ...] = ()

    @classmethod
    def of(cls, batch: Batch) -> BatchBody[Identity]:
        return BatchBody(tuple(batch.edges.items()), tuple(batch.dns.items()),
                         tuple((identity, tuple(sorted(names))) for identity, names in batch.names.items()))

    def batch(self, identity: Callable[[_I], Identity]) -> Batch:
        """The batch, each identity as ``identity`` makes it."""
        edges = {(identity(src), identity(dst), port, protocol): totals
                 for (src, dst, port, protocol), totals in self.edges}
        return Batch(edges, dict(self.dns), {identity(i): set(names) for i, names in self.names})


def _unchecked(cls: type) -> type[msgspec.Struct]:
    """A frozen Struct of ``cls``'s fields and defaults, without their bounds (``Annotated`` metadata):
    what the quick schema decodes, so that the dataclass stays the one place that declares them."""
    hints = get_type_hints(cls)  # without include_extras: the bounds are dropped
    return msgspec.defstruct(f"Unchecked{cls.__name__}", [
        (f.name, hints[f.name]) if f.default is dataclasses.MISSING else (f.name, hints[f.name], f.default)
        for f in dataclasses.fields(cls)], frozen=True)


# An Identity's fields as sent, names not checked yet: a batch names the same few identities in many
# edges, and collectors the same ones in every batch, so each distinct one is checked against the
# declared schema once (_identity), not twice per edge. Its ``key`` is decoded as the dataclass's is
# (then recomputed).
_WireIdentity = _unchecked(Identity)


@lru_cache(maxsize=1 << 15)
def _identity(wire: msgspec.Struct) -> Identity:
    """``wire`` checked by the declared schema (msgspec.ValidationError if it is not an identity)."""
    return msgspec.convert(msgspec.structs.asdict(wire), Identity)


def _itself(identity: Identity) -> Identity:
    return identity


class _BatchEnvelope(msgspec.Struct, Generic[_I], frozen=True, forbid_unknown_fields=True):
    """The declared schema of a collector's POST: :class:`BatchMessage` with its batch as a body."""

    batch_id: Annotated[str, msgspec.Meta(pattern=BATCH_ID)]
    batch: BatchBody[_I]
    flows: Count = 0
    source: Annotated[str, msgspec.Meta(max_length=253)] = ""
    cluster: ClusterView | None = None
    version: Annotated[int, msgspec.Meta(ge=WIRE_VERSION, le=WIRE_VERSION)] = WIRE_VERSION


def _problem(exc: msgspec.MsgspecError | RecursionError) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else schema_problem(exc)


def read(tp: type[_T], data: Any) -> _T:
    """Parsed JSON as ``tp`` (a dataclass, list, ...), every field checked against its declared type
    and bounds; WireError naming the field path on mismatch."""
    try:
        return msgspec.convert(data, tp, strict=True)
    except (msgspec.ValidationError, RecursionError) as exc:
        raise WireError(_problem(exc)) from None


def _too_late(message: _BatchEnvelope[Any]) -> str | None:
    """The first field holding a time after :func:`horizon` (the schema bounds only the static window)."""
    latest = horizon()
    for i, (_edge, totals) in enumerate(message.batch.edges):
        if (totals.last_seen or 0) > latest or (totals.first_seen or 0) > latest:
            return f"batch.edges[{i}]"
        for sample in totals.samples:  # a loop, not any() of a generator: this runs for every edge posted
            if (sample.ts or 0) > latest:
                return f"batch.edges[{i}].samples"
    for i, (_answer, seen) in enumerate(message.batch.dns):
        if seen.last_seen > latest:
            return f"batch.dns[{i}]"
    return None


def _decoded(body: bytes) -> tuple[_BatchEnvelope[Any], Batch]:
    """The message and its batch. Quick schema first (identities checked once each); whatever it or an
    identity's check refuses is decoded again by the declared schema, whose error names the first
    field at fault in the order of the document, exactly as if it had been the only decoder."""
    try:
        quick = _QUICK_DECODER.decode(body)
        return quick, quick.batch.batch(_identity)
    except (msgspec.MsgspecError, RecursionError):
        pass
    message = _BATCH_DECODER.decode(body)
    return message, message.batch.batch(_itself)


def read_batch(body: bytes) -> BatchMessage:
    """A collector's message (JSON bytes), decoded and validated in one pass by its declared schema."""
    try:
        message, batch = _decoded(body)
    except msgspec.ValidationError as exc:
        problem = schema_problem(exc)
        if problem.startswith("version:"):
            problem = f"wire format version: this server speaks {WIRE_VERSION}"
        raise WireError(problem, where="batch") from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise WireError(f"not JSON: {_problem(exc)}", where="batch") from None
    late = _too_late(message)
    if late:
        raise WireError("a timestamp more than a day in the future", where=f"batch {message.batch_id}: {late}")
    return BatchMessage(message.batch_id, batch, message.flows, message.source, message.cluster, message.version)


_BATCH_DECODER = msgspec.json.Decoder(_BatchEnvelope[Identity])
_QUICK_DECODER = msgspec.json.Decoder(_BatchEnvelope[_WireIdentity])  # type: ignore[valid-type]
