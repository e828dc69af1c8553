"""Live capture: one AF_PACKET socket per interface, a kernel BPF filter, a poll loop over them all.

Per-packet scapy dissection is about 40 times too slow for a node's connection rate, so scapy is
used only to compile the filter (libpcap through ctypes); frames are read with ``recvfrom`` and
parsed by :mod:`netpol_gen.ingest.decode`'s precompiled ``struct`` layouts.

The filter passes what starts or names a connection and little else:

* TCP segments with SYN set (SYN and SYN-ACK): the handshake gives the direction. Over IPv6 only
  when TCP directly follows the fixed header (BPF cannot walk extension headers).
* UDP to a port below 32768 (requests: Linux picks client ports from 32768-60999), and UDP from
  port 53 (DNS answers, which name external peers). Trade-off: UDP replies to a client that bound
  a low port pass, and requests from a server port to a client's high port (rare: some games, RTP)
  are missed; both are far cheaper than passing every reply of a bulk UDP transfer.
* TCP from port 53 carrying a payload (DNS over TCP answers; IPv4 only, as :mod:`.pcap` does).

With the pods' IPv4 CIDRs known (:func:`bpf_filter`), the kernel also drops a pod-to-pod handshake's
sightings at the receiving end, which user space would skip anyway (:mod:`.capture_track`): SYNs
sent into a pod from a pod address, SYN-ACKs leaving a pod for a pod address. That halves the frames
read for traffic between pods.

Sockets get a receive buffer of :data:`RCVBUF` bytes (``SO_RCVBUFFORCE``, beyond rmem_max, as
root): the default 208 KB drops whole bursts while the collector hands a batch over. Kernel drop
counters (``PACKET_STATISTICS``, reset on every read) are summed per interface.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from scapy.arch.common import compile_filter
from scapy.arch.linux import SO_ATTACH_FILTER, sock_fprog
from scapy.libs.structures import bpf_program

from netpol_gen.errors import InputError
from netpol_gen.ingest.decode import LINKTYPE_ETHERNET

BPF_FILTER = (
    "(ip and tcp[13] & 2 != 0)"
    " or (ip6 and ip6[6] = 6 and ip6[53] & 2 != 0)"
    " or (udp and (dst portrange 0-32767 or src port 53))"
    " or (ip and tcp src port 53 and ip[2:2] > ((ip[0] & 0xf) << 2) + ((tcp[12] & 0xf0) >> 2))"
)
RCVBUF = 64 << 20
SNAPLEN = 1 << 16  # DNS answers can be large; SYNs are short and cost only what they use
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33  # not exported by the socket module
PACKET_OUTGOING = 4  # sll_pkttype of a frame the host sent out of the interface
_TPACKET_STATS = struct.Struct("II")  # packets, drops

# (receive time, interface, sent by the host on this interface, frame)
FrameHandler = Callable[[float, str, bool, bytes], None]


class CaptureSetupError(InputError):
    """An interface that cannot be captured on (missing, not Ethernet, or no permission)."""


def bpf_filter(pod_cidrs: Iterable[str] = ()) -> str:
    """:data:`BPF_FILTER`, less the other end's sightings of handshakes between ``pod_cidrs`` (IPv4 only).

    ``outbound`` (sent by the host into the pod) and ``inbound`` test the frame's direction on the
    interface (a Linux socket-filter extension that libpcap emits for them).
    """
    nets = [cidr for cidr in pod_cidrs if ":" not in cidr]
    if not nets:
        return BPF_FILTER
    src = " or ".join(f"src net {cidr}" for cidr in nets)
    dst = " or ".join(f"dst net {cidr}" for cidr in nets)
    return (f"({BPF_FILTER}) and not (ip and tcp and ((outbound and tcp[13] & 18 = 2 and ({src}))"
            f" or (inbound and tcp[13] & 18 = 18 and ({dst}))))")


def compile_bpf(expression: str = BPF_FILTER) -> bpf_program:
    """Compile ``expression`` for Ethernet framing (no interface or privilege needed)."""
    return compile_filter(expression, linktype=LINKTYPE_ETHERNET)


def _attach(sock: socket.socket, program: bpf_program) -> None:
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, sock_fprog(program.bf_len, program.bf_insns))


@dataclass
class _Tap:
    sock: socket.socket
    iface: str


@dataclass
class DropCounts:
    """Kernel counters since the previous read: packets that passed the filter, and those dropped."""

    packets: int = 0
    drops: int = 0
    by_iface: dict[str, int] = field(default_factory=dict)  # drops per interface, when any


def open_socket(iface: str, program: bpf_program, rcvbuf: int = RCVBUF) -> socket.socket:
    """A non-blocking AF_PACKET socket on ``iface`` with ``program`` attached before any frame is queued.

    The socket is bound to protocol 0 first, so nothing is received until the filter is in place,
    then re-bound to all protocols.
    """
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        _attach(sock, program)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((iface, ETH_P_ALL))  # CPython converts the protocol to network order itself
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise CaptureSetupError(f"cannot capture: {exc.strerror or exc}", where=iface) from None
    return sock


def read_drops(sock: socket.socket) -> tuple[int, int]:
    """(packets, drops) since the last call; the kernel resets both on every read."""
    raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
    packets, drops = _TPACKET_STATS.unpack(raw)
    return packets, drops


class Capture:
    """The set of open taps; :meth:`poll` reads every ready socket until it is empty.

    Interfaces come and go with pods: :meth:`set_interfaces` opens the new ones and closes the ones
    that disappeared. A vanished interface's socket reports ENETDOWN/ENXIO and is closed the same way.
    """

    def __init__(self, program: bpf_program, rcvbuf: int = RCVBUF) -> None:
        self._program = program
        self._rcvbuf = rcvbuf
        self._taps: dict[int, _Tap] = {}  # by file descriptor
        self._poller = select.poll()

    @property
    def interfaces(self) -> list[str]:
        return sorted(tap.iface for tap in self._taps.values())

    def set_program(self, program: bpf_program) -> None:
        """Replace the filter on every socket (the kernel swaps it atomically) and for sockets to come."""
        self._program = program
        for tap in self._taps.values():
            _attach(tap.sock, program)

    def set_interfaces(self, wanted: Iterable[str], on_error: Callable[[CaptureSetupError], None]) -> None:
        wanted = set(wanted)
        for fd, tap in list(self._taps.items()):
            if tap.iface not in wanted:
                self._close(fd)
        have = {tap.iface for tap in self._taps.values()}
        for iface in sorted(wanted - have):
            try:
                sock = open_socket(iface, self._program, self._rcvbuf)
            except CaptureSetupError as exc:
                on_error(exc)
                continue
            self._taps[sock.fileno()] = _Tap(sock, iface)
            self._poller.register(sock.fileno(), select.POLLIN)

    def poll(self, timeout: float, handle: FrameHandler, clock: Callable[[], float]) -> int:
        """Wait up to ``timeout`` seconds, then hand every queued frame to ``handle``; return how many.

        Frames are timestamped when read: at most a poll round late, far below the attribution's
        resolution (pod lifetimes), and free, unlike a per-packet SIOCGSTAMP.
        """
        count = 0
        for fd, _ in self._poller.poll(max(timeout, 0.0) * 1000):
            tap = self._taps.get(fd)
            if tap is None:
                continue
            recvfrom, iface, now = tap.sock.recvfrom, tap.iface, clock()
            while True:
                try:
                    frame, address = recvfrom(SNAPLEN)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
                        self._close(fd)
                        break
                    raise
                count += 1
                handle(now, iface, address[2] == PACKET_OUTGOING, frame)
        return count

    def drops(self) -> DropCounts:
        """Kernel counters of every tap since the previous call."""
        counts = DropCounts()
        for tap in self._taps.values():
            packets, drops = read_drops(tap.sock)
            counts.packets += packets
            counts.drops += drops
            if drops:
                counts.by_iface[tap.iface] = drops
        return counts

    def close(self) -> None:
        for fd in list(self._taps):
            self._close(fd)

    def _close(self, fd: int) -> None:
        tap = self._taps.pop(fd)
        self._poller.unregister(fd)
        tap.sock.close()
