"""A tiny cluster of network namespaces for the collector's end-to-end test and benchmark.

One "host" namespace holds a bridge per node (routed to each other, as two nodes would be) and runs
the collector; each pod is a namespace with a veth whose host side is on its node's bridge. All
addresses are 10.199.x.y inside these namespaces: nothing is sent anywhere else, and names carry a
per-run tag so parallel runs on one machine do not meet. :meth:`Bed.close` removes everything.
"""

from __future__ import annotations

import ipaddress
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

UPLINKS = 4096  # /30s in 10.199.192.0/18


def unavailable() -> str | None:
    """Why the bed cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, AF_PACKET sockets)"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"npgprobe{uuid.uuid4().hex[:6]}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode:
        return "cannot create network namespaces (ip netns add failed)"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


# No scans of open connections: their socket source reads every network namespace on the machine, and
# the beds of tests running alongside use the same addresses too (test_collect_established covers scans).
NO_SCANS = ("--established-sources", "none")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True)
    if check and result.returncode:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result


# Serves TCP (accept, close) and UDP (echo) on the given ports, and DNS answers from a table on 53/udp.
SERVER = r"""
import json, selectors, socket, struct, sys
spec = json.loads(sys.argv[1])
sel = selectors.DefaultSelector()
for port in spec.get("tcp", []):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(4096); s.setblocking(False); sel.register(s, selectors.EVENT_READ, "tcp")
for port in spec.get("udp", []):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    sel.register(s, selectors.EVENT_READ, "udp")
records = spec.get("dns", {})
def answer(q):
    qid, flags, qd = struct.unpack_from("!HHH", q)
    off, labels = 12, []
    while q[off]:
        labels.append(q[off + 1:off + 1 + q[off]].decode()); off += 1 + q[off]
    question = q[12:off + 5]
    ip = records.get(".".join(labels).lower())
    head = struct.pack("!HHHHHH", qid, 0x8180 if ip else 0x8183, 1, 1 if ip else 0, 0, 0)
    rr = struct.pack("!HHHIH4s", 0xC00C, 1, 1, 30, 4, socket.inet_aton(ip)) if ip else b""
    return head + question + rr
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if key.data == "tcp":
            try:
                while True:
                    c, _ = s.accept(); c.close()
            except BlockingIOError:
                pass
        else:
            data, peer = s.recvfrom(2048)
            s.sendto(answer(data) if s.getsockname()[1] == 53 else data, peer)
"""

# Runs a list of actions; prints the DNS answers it got as JSON.
CLIENT = r"""
import json, socket, struct, sys
got = {}
for action in json.loads(sys.argv[1]):
    kind = action[0]
    if kind == "tcp":
        s = socket.create_connection((action[1], action[2]), timeout=5); s.close()
    elif kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
        s.sendto(b"ping", (action[1], action[2])); s.recvfrom(2048); s.close()
    elif kind == "dns":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
        name = b"".join(bytes([len(p)]) + p.encode() for p in action[2].split(".")) + b"\0"
        s.sendto(struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1), (action[1], 53))
        reply = s.recvfrom(2048)[0]; s.close()
        got[action[2]] = socket.inet_ntoa(reply[-4:])
print(json.dumps(got))
"""


@dataclass
class Bed:
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    namespaces: list[str] = field(default_factory=list)
    servers: list[subprocess.Popen[str]] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # in this process's namespace (uplinks)
    _veths: int = 0

    @property
    def host(self) -> str:
        return f"npg{self.tag}-host"

    def open(self) -> Bed:
        self._netns(self.host)
        run("ip", "netns", "exec", self.host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        return self

    def _netns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def bridge(self, name: str, gateway: str) -> None:
        """A node: a bridge in the host namespace with the pods' gateway address (``A.B.C.1/24``)."""
        run("ip", "-n", self.host, "link", "add", name, "type", "bridge")
        run("ip", "-n", self.host, "addr", "add", gateway, "dev", name)
        run("ip", "-n", self.host, "link", "set", name, "up")

    def pod(self, name: str, bridge: str, address: str, prefix: str = "veth") -> str:
        """A pod namespace with ``address``/24 on eth0, its host side on ``bridge``; returns the host side."""
        ns = f"npg{self.tag}-{name}"
        self._netns(ns)
        self._veths += 1
        host_side = f"{prefix}{self.tag}{self._veths:02d}"
        run("ip", "-n", self.host, "link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "-n", self.host, "link", "set", host_side, "master", bridge, "up")
        run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", ns, "route", "add", "default", "via", address.rsplit(".", 1)[0] + ".1")
        return host_side

    def remove_pod(self, name: str) -> None:
        ns = f"npg{self.tag}-{name}"
        run("ip", "netns", "del", ns)
        self.namespaces.remove(ns)

    def uplink(self) -> tuple[str, str]:
        """A veth from this process's namespace to the host namespace; returns (our address, the host's).

        What runs in the host namespace (collectors) reaches a service of ours (a store server next to
        a PostgreSQL that only listens here) as a node reaches the store's pod. The /30 is taken from
        10.199.192.0/18 by the run's tag, skipping one in use here; the link goes with the host namespace.
        """
        ours, theirs = f"npg{self.tag}up", f"npg{self.tag}dn"
        first = int(ipaddress.ip_address("10.199.192.0"))
        for k in range(UPLINKS):
            net = ipaddress.ip_network((first + (int(self.tag, 16) + k) % UPLINKS * 4, 30))
            if not run("ip", "-o", "-4", "addr", "show", "to", str(net)).stdout.strip():
                break
        local, remote = str(net.network_address + 1), str(net.network_address + 2)
        run("ip", "link", "add", ours, "type", "veth", "peer", "name", theirs, "netns", self.host)
        self.links.append(ours)
        run("ip", "addr", "add", f"{local}/30", "dev", ours)
        run("ip", "link", "set", ours, "up")
        run("ip", "-n", self.host, "addr", "add", f"{remote}/30", "dev", theirs)
        run("ip", "-n", self.host, "link", "set", theirs, "up")
        return local, remote

    def node_interfaces(self, bridge: str) -> list[str]:
        """The pod interfaces (host sides) on ``bridge``: what one node's collector captures on."""
        out = run("ip", "-n", self.host, "-o", "link", "show", "master", bridge).stdout
        return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())

    def exec_args(self, name: str) -> list[str]:
        ns = self.host if name == "host" else f"npg{self.tag}-{name}"
        return ["ip", "netns", "exec", ns]

    def serve(self, name: str, spec: dict[str, Any]) -> None:
        """Start the server in pod ``name``; returns once it listens."""
        proc = subprocess.Popen([*self.exec_args(name), sys.executable, "-c", SERVER, json.dumps(spec)],
                                stdout=subprocess.PIPE, text=True)
        self.servers.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"server in {name} did not start")

    def client(self, name: str, actions: list[list[Any]]) -> dict[str, str]:
        out = run(*self.exec_args(name), sys.executable, "-c", CLIENT, json.dumps(actions))
        result: dict[str, str] = json.loads(out.stdout)
        return result

    def nft(self, script: str) -> None:
        subprocess.run([*self.exec_args("host"), "nft", "-f", "-"], input=script, text=True, check=True,
                       capture_output=True)

    def close(self) -> None:
        for proc in self.servers:
            proc.kill()
            proc.wait()
        for ns in reversed(self.namespaces):  # the host namespace last: bridges, veths and nft go with it
            run("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()
        for link in self.links:  # gone with its peer's namespace unless that failed
            run("ip", "link", "del", link, check=False)
        self.links.clear()


def _ts(value: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


def pod_doc(ns: str, name: str, ip: str, node: str, labels: dict[str, str], owner: tuple[str, str],
         created: float, ended: float | None = None, ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Pod as `kubectl get -o json` has it, as much as the snapshot loader reads."""
    meta: dict[str, Any] = {"namespace": ns, "name": name, "uid": f"uid-{name}", "labels": labels,
                            "creationTimestamp": _ts(created),
                            "ownerReferences": [{"kind": owner[0], "name": owner[1], "controller": True}]}
    if ended is not None:
        meta["deletionTimestamp"] = _ts(ended)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


class JsonLog:
    """The collector's JSON log lines, read on a thread, waited for by content."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        assert proc.stderr is not None
        stderr = proc.stderr
        threading.Thread(target=lambda: [self.lines.put(json.loads(line)) for line in stderr], daemon=True).start()

    def wait(self, what: str, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                entry = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"collector never logged {what}; log: {self.seen[-8:]}") from None
            self.seen.append(entry)
            if predicate(entry):
                return entry
