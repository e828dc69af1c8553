"""The node's tables of open connections, read from the kernel: conntrack over netlink, and each pod
network namespace's TCP socket table from ``/proc``.

Conntrack is read with pyroute2 (``NFCTSocket`` dumps over NETLINK_NETFILTER, IPv4 and IPv6):
only entries in TCP state ESTABLISHED; it needs CAP_NET_ADMIN in the node's network namespace
(the collector runs with ``hostNetwork``). Pod traffic passes the node's conntrack where kube-proxy
(iptables/nftables/IPVS) or a netfilter CNI runs; an eBPF datapath without netfilter (Cilium's
kube-proxy replacement) leaves it empty, hence the second table.

Socket tables: ``/proc/<pid>/net/tcp`` and ``tcp6`` show the table of the network namespace that
process is in, so one process per namespace is read (namespaces told apart by the inode of
``/proc/<pid>/ns/net``). This needs the host PID namespace (``hostPID``) and, for pods running as
another user than the collector, CAP_SYS_PTRACE (the kernel checks ptrace read access on the
namespace link); no namespace is entered. The collector's own namespace (the node's) is skipped:
host-network processes are not policy subjects, and capture does not learn them either.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator

from netpol_gen.ingest.established import SocketEntry, TrackedConnection, canonical_ip

TCP_ESTABLISHED = 3  # conntrack's TCP state number (nf_conntrack_tcp.h)
_ST_ESTABLISHED, _ST_LISTEN = "01", "0A"  # /proc/net/tcp's socket states (include/net/tcp_states.h)


class TableUnreadable(Exception):
    """A table the collector has no access to (missing capability, module or /proc); says which and why."""


def read_conntrack() -> list[TrackedConnection]:
    """Every established TCP connection in this network namespace's connection-tracking table."""
    from pyroute2 import Conntrack  # here: importing pyroute2 costs 0.3 s, only collectors need it

    found: list[TrackedConnection] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            with Conntrack(nfgen_family=family) as table:
                for entry in table.dump_entries():
                    orig, reply, info = entry.tuple_orig, entry.tuple_reply, entry.protoinfo
                    if orig.proto != socket.IPPROTO_TCP or info is None or info.state != TCP_ESTABLISHED:
                        continue
                    found.append(TrackedConnection(canonical_ip(orig.saddr), orig.sport, canonical_ip(orig.daddr),
                                                   orig.dport, canonical_ip(reply.saddr), reply.sport))
        except OSError as exc:  # EPERM without CAP_NET_ADMIN; EPROTONOSUPPORT without nf_conntrack_netlink
            raise TableUnreadable(f"cannot dump the conntrack table over netlink: {exc.strerror or exc}") from None
    return found


def _address(hexed: str) -> str:
    """A /proc/net/tcp address: 32-bit words in host byte order, as hex."""
    raw = b"".join(struct.pack("=I", int(hexed[i:i + 8], 16)) for i in range(0, len(hexed), 8))
    return canonical_ip(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw))


def parse_proc_tcp(text: str) -> Iterator[SocketEntry]:
    """The established and listening sockets of a ``/proc/<pid>/net/tcp`` or ``tcp6`` table."""
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] not in (_ST_ESTABLISHED, _ST_LISTEN):
            continue
        (local, lport), (remote, rport) = (part.split(":") for part in fields[1:3])
        yield SocketEntry(_address(local), int(lport, 16), _address(remote), int(rport, 16),
                          fields[3] == _ST_LISTEN)


def _netns(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:  # gone, or no ptrace access to its namespace link
        return None


def read_pod_sockets(proc: str = "/proc") -> list[list[SocketEntry]]:
    """The TCP socket table of every network namespace but ours that a process of this host is in."""
    own = _netns(f"{proc}/self/ns/net")
    seen = {own}
    tables: list[list[SocketEntry]] = []
    pids = [name for name in os.listdir(proc) if name.isdigit()]
    denied = 0
    for pid in pids:
        netns = _netns(f"{proc}/{pid}/ns/net")
        if netns is None:
            denied += os.path.exists(f"{proc}/{pid}")
            continue
        if netns in seen:
            continue
        seen.add(netns)
        table: list[SocketEntry] = []
        try:
            for name in ("tcp", "tcp6"):
                with open(f"{proc}/{pid}/net/{name}", encoding="ascii") as stream:
                    table.extend(parse_proc_tcp(stream.read()))
        except FileNotFoundError:  # the process exited (tcp6 also misses without IPv6: keep what was read)
            pass
        except OSError as exc:
            raise TableUnreadable(f"cannot read {proc}/{pid}/net/tcp: {exc.strerror}") from None
        tables.append(table)
    if denied and len(seen) == 1:
        raise TableUnreadable(f"no other network namespace readable under {proc} ({denied} processes denied: "
                              "the socket source needs hostPID and CAP_SYS_PTRACE)")
    return tables
