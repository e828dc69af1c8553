"""`import --pcap` with dumps of the kernel's connection tables taken at capture time.

Stands in for a tcpdump started while connections were already open: the capture holds their data
and FIN segments but no handshake, so on its own the importer cannot tell who initiated them. A
`conntrack -L -o extended` (or `-o xml`) dump of the node and an `ss -tanp` dump of a backend pod
name the initiators: those connections are learnt (a conntrack entry's DNAT reply tuple names the
backend behind the ClusterIP), the one no dump names stays counted as without direction. Bad dumps
stop the import with a one-line error naming file and line; nothing is stored.

The cluster is tests/data/store-cluster-t*.yaml (see tests/test_import.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from tests.cli import run_cli
from tests.test_cli_import import CLUSTER_ARGS, _one_line_error, edge_count
from tests.test_import import API_SVC, API_V1, API_V2, FRONTEND, at, edges

CONNTRACK_TEXT = f"""\
ipv4     2 tcp      6 431999 ESTABLISHED src={FRONTEND} dst={API_SVC} sport=45000 dport=80 \
src={API_V1} dst={FRONTEND} sport=8080 dport=45000 [ASSURED] mark=0 use=1
ipv4     2 udp      17 25 src={FRONTEND} dst=10.96.0.10 sport=5353 dport=53 \
src=10.244.3.3 dst={FRONTEND} sport=53 dport=5353 mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.
"""
CONNTRACK_XML = f"""<?xml version="1.0" encoding="utf-8"?>
<conntrack>
<flow><meta direction="original"><layer3 protonum="2" protoname="ipv4"><src>{FRONTEND}</src><dst>{API_SVC}</dst>\
</layer3><layer4 protonum="6" protoname="tcp"><sport>45000</sport><dport>80</dport></layer4></meta>\
<meta direction="reply"><layer3 protonum="2" protoname="ipv4"><src>{API_V1}</src><dst>{FRONTEND}</dst></layer3>\
<layer4 protonum="6" protoname="tcp"><sport>8080</sport><dport>45000</dport></layer4></meta>\
<meta direction="independent"><state>ESTABLISHED</state><timeout>431999</timeout></meta></flow>
</conntrack>
"""
# `ss -tanp` in api-v2's network namespace: it listens on 9090, the frontend's connection is open.
SS = f"""\
State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process
LISTEN 0      4096         0.0.0.0:9090       0.0.0.0:*     users:(("api",pid=1,fd=5))
LISTEN 0      4096            [::]:9090          [::]:*     users:(("api",pid=1,fd=6))
ESTAB  0      0       {API_V2}:9090  {FRONTEND}:45001 users:(("api",pid=1,fd=7))
"""


def _mid_stream(client: str, cport: int, server: str, sport: int, ts: float) -> list[Ether]:
    """A connection's last segments, no handshake; the server speaks first (a port guess would err)."""
    return [
        Ether() / IP(src=server, dst=client) / TCP(sport=sport, dport=cport, flags="PA", seq=900, ack=100) / b"row",
        Ether() / IP(src=client, dst=server) / TCP(sport=cport, dport=sport, flags="A", seq=100, ack=903),
        Ether() / IP(src=server, dst=client) / TCP(sport=sport, dport=cport, flags="FA", seq=903, ack=100),
        Ether() / IP(src=client, dst=server) / TCP(sport=cport, dport=sport, flags="FA", seq=100, ack=904),
    ]


def _capture(tmp_path: Path) -> str:
    ts = at("10:30:00")
    packets = [*_mid_stream(FRONTEND, 45000, API_SVC, 80, ts),  # through the ClusterIP: conntrack knows it
               *_mid_stream(FRONTEND, 45001, API_V2, 9090, ts),  # api-v2's ss dump knows it
               *_mid_stream(FRONTEND, 45002, API_V1, 7000, ts)]  # no dump knows it
    for offset, packet in enumerate(packets):
        packet.time = ts + offset * 0.01
    path = tmp_path / "node-a.pcap"
    wrpcap(str(path), packets)
    return str(path)


@pytest.mark.parametrize("form", ["extended", "xml"])
def test_dumps_resolve_connections_seen_without_handshake(store_url: str, tmp_path: Path, form: str) -> None:
    capture = _capture(tmp_path)
    alone = run_cli("import", "--db", f"sqlite:///{tmp_path / 'alone.db'}", *CLUSTER_ARGS, "--pcap", capture)
    assert alone.exit_code == 0 and "flows without direction: 3" in alone.stdout, alone.output
    conntrack, ss = tmp_path / f"conntrack.{form}", tmp_path / "api-v2.ss"
    conntrack.write_text(CONNTRACK_TEXT if form == "extended" else CONNTRACK_XML)
    ss.write_text(SS)
    result = run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--pcap", capture, "--conntrack", str(conntrack),
                     "--ss", str(ss))
    assert result.exit_code == 0, result.output
    assert "flows without direction: 1 (2 more resolved by the conntrack/ss dumps)" in result.stdout
    found = {key: (edge.connections, dict(edge.established)) for key, edge in edges(store_url).items()}
    assert found == {  # the DNAT backend (not every backend of the Service), the ss listener's side
        ("shop/Deployment/frontend", "shop/Deployment/api-v1", 8080, "TCP"): (1, {"conntrack": 1}),
        ("shop/Deployment/frontend", "shop/Deployment/api-v2", 9090, "TCP"): (1, {"sockets": 1}),
    }


@pytest.mark.parametrize(("name", "text", "error"), [
    ("ct.txt", CONNTRACK_TEXT.replace(f"src={API_V1} ", ""), "line 1: expected a conntrack entry "
     "(conntrack -L -o extended): the reply tuple has no src="),
    ("ct.txt", CONNTRACK_TEXT.replace("sport=45000", "sport=4500000"), "line 1: sport '4500000' is not a port number"),
    ("ct.xml", CONNTRACK_XML.replace("</flow>", ""), "line 4: not valid XML (mismatched tag)"),
    ("ct.xml", CONNTRACK_XML.replace(f"<src>{API_V1}</src>", ""), "flow 1: the reply tuple has no <src>"),
])
def test_bad_conntrack_dump_is_one_line(store_url: str, tmp_path: Path, name: str, text: str, error: str) -> None:
    dump = tmp_path / name
    dump.write_text(text)
    line = _one_line_error(run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--pcap", _capture(tmp_path),
                                   "--conntrack", str(dump)))
    assert line.startswith(f"netpol-gen: error: {dump}:{error}"), line
    assert edge_count(store_url) == 0


@pytest.mark.parametrize(("text", "error"), [
    (SS.replace("9090 ", "http "), "line 2: port 'http' is not a number (take the dump with ss -tan: numeric)"),
    (SS.replace(f"{FRONTEND}:45001", "frontend"), "line 4: expected ADDRESS:PORT, got 'frontend'"),
    (SS + "ESTAB 0 0\n", "line 5: expected State Recv-Q Send-Q Local-Address:Port Peer-Address:Port (ss -tan)"),
])
def test_bad_ss_dump_is_one_line(store_url: str, tmp_path: Path, text: str, error: str) -> None:
    dump = tmp_path / "pod.ss"
    dump.write_text(text)
    line = _one_line_error(run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--pcap", _capture(tmp_path),
                                   "--ss", str(dump)))
    assert line.startswith(f"netpol-gen: error: {dump}:{error}"), line
    assert edge_count(store_url) == 0
