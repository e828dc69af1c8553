"""Connections that were already open, turned into flows with the right initiator and server port.

Capture learns a TCP connection from its handshake; a connection opened before capture started is
never seen starting (database pools, queue consumers, gRPC streams, watches). Two records of the
kernel still name both ends and the direction:

* a netfilter connection-tracking entry: its ORIGINAL tuple is the initiator's packet as sent
  (``src`` initiated, to ``dst:dport``, e.g. a Service ClusterIP and port); its REPLY tuple is what
  the server answers from, so for a DNATed entry (kube-proxy's Service translation) the reply
  source is the backend pod and its port the targetPort. The flow is initiator -> reply source on
  the reply source port: the same edge a captured SYN yields after Service resolution, but to the
  backend that really served it.
* a network namespace's socket table (``/proc/<pid>/net/tcp{,6}``, ``ss -tan``): an established
  socket whose local port has a listening socket in the same namespace is the server's end
  (the peer initiated); otherwise it is the client's end (it initiated, to the peer's port).

Both are read by the live collector (from the kernel) and by ``import --conntrack/--ss`` (from
dumps taken at capture time); this module is the conversion they share. Flows learnt this way are
marked with their source (``conntrack``, ``sockets``: :mod:`netpol_gen.model.aggregate`), which the store keeps
per edge so that ``status`` and ``export --explain`` can tell them from captured ones.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from netpol_gen.model.flows import Flow

FourTuple = tuple[str, int, str, int]  # initiator address and port, responder address and port


@dataclass(frozen=True, slots=True)
class TrackedConnection:
    """One connection-tracking entry of an established TCP connection (addresses canonical)."""

    orig_src: str
    orig_sport: int
    orig_dst: str
    orig_dport: int
    reply_src: str
    reply_sport: int

    @property
    def flow_tuple(self) -> FourTuple:
        """Initiator to the server that answered: the backend and targetPort of a DNATed entry."""
        return (self.orig_src, self.orig_sport, self.reply_src, self.reply_sport)

    @property
    def tuples(self) -> tuple[FourTuple, ...]:
        """Every four-tuple this connection shows elsewhere: as the client sent it, and as the server
        received it (the same one when not translated)."""
        sent = (self.orig_src, self.orig_sport, self.orig_dst, self.orig_dport)
        return (sent,) if sent == self.flow_tuple else (sent, self.flow_tuple)


@dataclass(frozen=True, slots=True)
class SocketEntry:
    """One TCP socket of a namespace's table; ``remote`` is empty (``0.0.0.0:0``) for a listener."""

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    listening: bool


def canonical_ip(value: str) -> str:
    """``value`` in canonical form, an IPv4-mapped IPv6 address as IPv4 (dual-stack sockets show them).

    ValueError if it is no address."""
    address = ipaddress.ip_address(value)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


_WILDCARDS = frozenset({"0.0.0.0", "::"})


def socket_views(sockets: Iterable[SocketEntry]) -> list[tuple[FourTuple, bool]]:
    """The established connections of one network namespace's table, each oriented initiator first,
    with whether this namespace holds the server's end.

    A connection inside the namespace (loopback, or to its own address) never crosses a policy and
    is left out.
    """
    sockets = list(sockets)
    listening = {(s.local_ip, s.local_port) for s in sockets if s.listening}
    any_address = {port for ip, port in listening if ip in _WILDCARDS}
    found: list[tuple[FourTuple, bool]] = []
    for s in sockets:
        if s.listening or s.local_ip == s.remote_ip or ipaddress.ip_address(s.remote_ip).is_loopback:
            continue
        if s.local_port in any_address or (s.local_ip, s.local_port) in listening:
            found.append(((s.remote_ip, s.remote_port, s.local_ip, s.local_port), True))
        else:
            found.append(((s.local_ip, s.local_port, s.remote_ip, s.remote_port), False))
    return found


def merge_views(views: Iterable[tuple[FourTuple, bool]]) -> list[FourTuple]:
    """One tuple per connection from the views of several namespaces (one node's pods, or dumps).

    When both ends were read, the server's view is kept: the client addressed a Service's ClusterIP,
    the server's socket names the backend and targetPort it really reached. A client view is matched
    to a server view by the client's address and port (a client port reused towards two servers at
    once drops the second client view: rare, and that server's own view still names it).
    """
    views = list(views)
    served = {(conn[0], conn[1]) for conn, server_side in views if server_side}
    return list(dict.fromkeys(conn for conn, server_side in views if server_side or (conn[0], conn[1]) not in served))


def tuple_flow(conn: FourTuple, ts: float | None) -> Flow:
    """The flow of an established TCP connection (no packet counts: only its state was read)."""
    src, sport, dst, dport = conn
    return Flow(src, dst, dport, "TCP", sport, ts)
