"""Which interfaces to capture on: each pod's host-side interface, found from the host's links.

Capturing there sees each pod's traffic once, with pod addresses before any SNAT, and the frame's
direction on the interface tells the pod's egress (received from the pod) from its ingress (sent
by the host to the pod). A bridge or ``any`` would show the same packet two to six times.
CNIs name these interfaces by prefix; the list is re-read as pods come and go.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

# Calico cali*, Cilium lxc*, AWS VPC CNI eni*, GKE gke*, Azure azv*, bridge/ptp/flannel/kindnet veth*.
POD_PREFIXES = ("veth", "cali", "lxc", "eni", "gke", "azv")
SYS_CLASS_NET = "/sys/class/net"
_ARPHRD_ETHER = "1"


def _is_ethernet(name: str, root: str) -> bool:
    try:
        with open(os.path.join(root, name, "type"), encoding="ascii") as stream:
            return stream.read().strip() == _ARPHRD_ETHER
    except OSError:  # gone since it was listed
        return False


def pod_interfaces(prefixes: Iterable[str] = POD_PREFIXES, root: str = SYS_CLASS_NET) -> list[str]:
    """Ethernet links whose name starts with one of ``prefixes`` (``lxc_health`` and the like
    included: harmless, they carry little)."""
    prefixes = tuple(prefixes)
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return sorted(n for n in names if n.startswith(prefixes) and _is_ethernet(n, root))
