"""Readers for tables of open connections dumped at capture time, for ``import --conntrack/--ss``.

A capture started while connections were already open shows their packets but not their
handshakes: the flow tracker cannot tell who initiated them ("direction unknown"). A dump of the
kernel's tables taken at capture time can, and :func:`direction_hints` turns dumps into the map the
tracker consults (:class:`netpol_gen.ingest.flowtrack.FlowTracker`):

* ``conntrack -L -o extended`` (or plain ``conntrack -L``) text, one entry a line::

    ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.96.0.10 sport=45678 dport=80 \
src=10.0.1.5 dst=10.0.0.1 sport=8080 dport=45678 [ASSURED] mark=0 use=1

  The first ``src/dst/sport/dport`` are the ORIGINAL tuple (``src`` initiated), the second the REPLY
  tuple. Entries of other protocols are skipped; TCP entries of any state count (a connection that
  closed during the capture is in TIME_WAIT in the dump and still names its initiator). conntrack's
  own summary line (``conntrack v1.4.7 (conntrack-tools): N flow entries have been shown.``) and
  blank lines are ignored.
* ``conntrack -L -o xml``: ``<flow>`` elements with ``<meta direction="original|reply">`` holding
  ``<layer3><src/><dst/></layer3><layer4 protoname="tcp"><sport/><dport/></layer4>``.
* ``ss -tan`` (``-p`` adds a process column, ignored), run in one network namespace, one file per
  namespace: a connection's socket whose local port has a LISTEN socket in that dump is the server's
  end. Numeric output (``-n``) is required.

Bad dumps stop the import with ``file:line N: what`` (``file:flow N`` in XML), nothing written.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence

from netpol_gen.errors import InputError
from netpol_gen.ingest.established import FourTuple, SocketEntry, TrackedConnection, canonical_ip, socket_views
from netpol_gen.model.aggregate import SOURCE_CONNTRACK, SOURCE_SOCKETS

_TUPLE_KEYS = ("src", "dst", "sport", "dport")


class DumpError(InputError):
    """A conntrack or ss dump that cannot be read."""


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except OSError as exc:
        raise DumpError(f"cannot read: {exc.strerror}", where=path) from None
    except UnicodeDecodeError:
        raise DumpError("not a text file", where=path) from None


def _ip(value: str, what: str) -> str:
    try:
        return canonical_ip(value)
    except ValueError:
        raise DumpError(f"{what} {value!r} is not an IP address") from None


def _port(value: str, what: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise DumpError(f"{what} {value!r} is not a port number")
    return int(value)


def _conntrack_line(line: str) -> TrackedConnection | None:
    words = line.split()
    proto = words[2] if words[0] in ("ipv4", "ipv6") and len(words) > 2 else words[0]
    if proto != "tcp":
        return None
    pairs = [word.split("=", 1) for word in words if "=" in word]
    tuples: list[dict[str, str]] = [{}, {}]
    for key, value in pairs:
        if key in _TUPLE_KEYS:
            target = tuples[0] if key not in tuples[0] else tuples[1]
            target.setdefault(key, value)
    for name, found in zip(("original", "reply"), tuples, strict=True):
        missing = [key for key in _TUPLE_KEYS if key not in found]
        if missing:
            raise DumpError(f"expected a conntrack entry (conntrack -L -o extended): the {name} tuple has no "
                            f"{missing[0]}=")
    orig, reply = tuples
    return TrackedConnection(_ip(orig["src"], "src"), _port(orig["sport"], "sport"), _ip(orig["dst"], "dst"),
                             _port(orig["dport"], "dport"), _ip(reply["src"], "src"), _port(reply["sport"], "sport"))


def _conntrack_text(path: str, text: str) -> list[TrackedConnection]:
    found: list[TrackedConnection] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("conntrack v"):
            continue
        try:
            entry = _conntrack_line(line)
        except DumpError as exc:
            raise DumpError(exc.what, where=f"{path}:line {number}") from None
        if entry is not None:
            found.append(entry)
    return found


def _xml_tuple(flow: ET.Element, direction: str) -> tuple[str, int, str, int] | None:
    meta = next((m for m in flow.iter("meta") if m.get("direction") == direction), None)
    if meta is None:
        raise DumpError(f"no <meta direction=\"{direction}\">")
    layer4 = meta.find("layer4")
    if layer4 is None or layer4.get("protoname") != "tcp":
        return None
    values = {key: (meta.findtext(f"layer3/{key}") if key in ("src", "dst") else layer4.findtext(key))
              for key in _TUPLE_KEYS}
    missing = [key for key, value in values.items() if value is None]
    if missing:
        raise DumpError(f"the {direction} tuple has no <{missing[0]}>")
    src, dst, sport, dport = (str(values[key]).strip() for key in _TUPLE_KEYS)
    return _ip(src, "src"), _port(sport, "sport"), _ip(dst, "dst"), _port(dport, "dport")


def _conntrack_xml(path: str, text: str) -> list[TrackedConnection]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise DumpError(f"not valid XML ({str(exc).rsplit(': line', 1)[0]})",
                        where=f"{path}:line {exc.position[0]}") from None
    if root.tag != "conntrack":
        raise DumpError(f"expected <conntrack> (conntrack -L -o xml), got <{root.tag}>", where=path)
    found: list[TrackedConnection] = []
    for number, flow in enumerate(root.iter("flow"), 1):
        try:
            orig, reply = _xml_tuple(flow, "original"), _xml_tuple(flow, "reply")
        except DumpError as exc:
            raise DumpError(exc.what, where=f"{path}:flow {number}") from None
        if orig is not None and reply is not None:
            found.append(TrackedConnection(*orig, reply[0], reply[1]))
    return found


def read_conntrack_dump(path: str) -> list[TrackedConnection]:
    """The TCP entries of a ``conntrack -L`` dump, text (``-o extended`` or plain) or XML (``-o xml``)."""
    text = _read_text(path)
    if text.lstrip().startswith("<"):
        return _conntrack_xml(path, text)
    return _conntrack_text(path, text)


def _ss_endpoint(value: str, *, wildcard_port: bool) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        raise DumpError(f"expected ADDRESS:PORT, got {value!r}")
    host = host.strip("[]").split("%", 1)[0]  # [v6]:port, and ss's %interface of a device-bound socket
    host = {"*": "0.0.0.0"}.get(host, host)
    if port == "*" and wildcard_port:
        return _ip(host, "address"), 0
    if not port.isdigit():
        raise DumpError(f"port {port!r} is not a number (take the dump with ss -tan: numeric)")
    return _ip(host, "address"), _port(port, "port")


def read_ss_dump(path: str) -> list[SocketEntry]:
    """The TCP sockets of an ``ss -tan`` (or ``-tanp``) dump of one network namespace."""
    found: list[SocketEntry] = []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        words = line.split()
        if not words or words[0] == "State":
            continue
        try:
            if len(words) < 5:
                raise DumpError("expected State Recv-Q Send-Q Local-Address:Port Peer-Address:Port (ss -tan)")
            listening = words[0] == "LISTEN"
            local = _ss_endpoint(words[3], wildcard_port=False)
            remote = _ss_endpoint(words[4], wildcard_port=listening)
        except DumpError as exc:
            raise DumpError(exc.what, where=f"{path}:line {number}") from None
        if words[0] == "UNCONN":
            continue
        found.append(SocketEntry(local[0], local[1], remote[0], remote[1], listening))
    return found


def direction_hints(conntrack: Iterable[TrackedConnection], ss_tables: Sequence[Sequence[SocketEntry]]
                    ) -> dict[FourTuple, tuple[FourTuple, str]]:
    """Every four-tuple the dumps name -> the connection initiator first, to the server that answered,
    and the dump's source (:data:`netpol_gen.ingest.flowtrack.Hints`).

    A capture shows a connection as the client sent it or as the server received it (after DNAT),
    so every tuple of a conntrack entry leads to its backend; conntrack wins where both name one.
    """
    hints: dict[FourTuple, tuple[FourTuple, str]] = {}
    for table in ss_tables:
        for conn, _server_side in socket_views(table):
            hints[conn] = (conn, SOURCE_SOCKETS)
    for entry in conntrack:
        for conn in entry.tuples:
            hints[conn] = (entry.flow_tuple, SOURCE_CONNTRACK)
    return hints
