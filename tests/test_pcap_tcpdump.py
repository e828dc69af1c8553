"""pcap import of a capture written by real tcpdump on the loopback, as ``tcpdump -i any`` users make them.

tcpdump is stopped by ``-c`` once it has written the packets we wait for, and the connection is
opened only after tcpdump says it is listening: no sleeps. Skipped (with the reason) without tcpdump
or without the privilege to capture.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from netpol_gen.ingest.pcap import read_capture
from netpol_gen.model.flows import Flow


def _capture(tmp_path: Path, linktype: str, count: int, bpf: str) -> tuple[subprocess.Popen[bytes], Path]:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.skip("tcpdump is not installed")
    if os.geteuid() != 0:
        pytest.skip("capturing needs root")
    path = tmp_path / f"lo-{linktype}.pcap"
    command = [tcpdump, "-i", "any", "-y", linktype, "-n", "-U", "-c", str(count), "-w", str(path), bpf]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    said = []
    for raw in proc.stderr:  # "tcpdump: listening on any, ..." once the capture runs
        said.append(raw.decode().strip())
        if "listening on" in said[-1]:
            break
    else:
        proc.wait()
        pytest.skip(f"tcpdump cannot capture here: {' / '.join(said) or proc.returncode}")
    return proc, path


@pytest.mark.parametrize("linktype", ["LINUX_SLL", "LINUX_SLL2"])
def test_real_tcpdump_capture(tmp_path: Path, linktype: str) -> None:
    with socket.socket() as listener, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp_server:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        udp_server.bind(("127.0.0.1", 0))
        port, udp_port = listener.getsockname()[1], udp_server.getsockname()[1]
        # SYN, SYN-ACK and the two FINs of the TCP connection, then the UDP request and its reply.
        proc, path = _capture(tmp_path, linktype, 6,
                              f"(tcp port {port} and tcp[13] & 3 != 0) or (udp port {udp_port})")
        try:
            with socket.create_connection(("127.0.0.1", port)) as client:
                client_port = client.getsockname()[1]
                accepted, _ = listener.accept()
                with accepted:
                    client.sendall(b"ping")
                    assert accepted.recv(4) == b"ping"
                    client.shutdown(socket.SHUT_WR)
                    assert accepted.recv(1) == b""
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp_client:
                udp_client.sendto(b"request", ("127.0.0.1", udp_port))
                data, peer = udp_server.recvfrom(100)
                assert data == b"request"
                udp_server.sendto(b"reply", peer)
                assert udp_client.recv(100) == b"reply"
                udp_client_port = udp_client.getsockname()[1]
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for bpf in (False, True):
        result = read_capture(str(path), bpf=bpf)
        flows = sorted((r for r in result.records if isinstance(r, Flow)), key=lambda f: f.protocol)
        assert [(f.protocol, f.src_port, f.dst_port, f.src_ip, f.dst_ip) for f in flows] == [
            ("TCP", client_port, port, "127.0.0.1", "127.0.0.1"),
            ("UDP", udp_client_port, udp_port, "127.0.0.1", "127.0.0.1"),
        ]
        assert flows[1].packets == 2
        assert result.stats.direction_unknown == 0
