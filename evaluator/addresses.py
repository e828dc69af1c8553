"""Addresses by what policies can see of them: their IP family and the set of address blocks
(ipBlocks, CIDR sets, Calico nets) of a policy set that contain them.

Two addresses in the same blocks are matched alike by every address rule of the set, so caches keyed
by this class instead of the address hold one entry per class, however many addresses a capture
names. Finding the blocks of a new address is one dictionary lookup per distinct prefix length among
the blocks (the address masked to that length), then the ``except`` check of the few candidates: no
scan of the blocks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from netpol_gen.evaluator.policy import IPBlock
from netpol_gen.model.cluster import remember

AddressClass = tuple[int, frozenset[int]]  # IP version, indices of the blocks containing the address


class AddressClasses:
    """The classes of addresses for one set of blocks; :meth:`of` is memoised per address."""

    def __init__(self, blocks: Iterable[IPBlock]) -> None:
        self.blocks: list[IPBlock] = list(dict.fromkeys(blocks))
        # version -> prefix length -> network address as int -> indices of the blocks with that cidr
        self._by_prefix: dict[int, dict[int, dict[int, list[int]]]] = {4: {}, 6: {}}
        for index, block in enumerate(self.blocks):
            cidr = block.cidr
            by_network = self._by_prefix[cidr.version].setdefault(cidr.prefixlen, {})
            by_network.setdefault(int(cidr.network_address), []).append(index)
        self._cache: dict[str, AddressClass] = {}

    def of(self, ip: str) -> AddressClass:
        found = self._cache.get(ip)
        if found is None:
            found = remember(self._cache, ip, self._classify(ip))
        return found

    def _classify(self, ip: str) -> AddressClass:
        address = ipaddress.ip_address(ip)
        value, bits = int(address), address.max_prefixlen
        inside: list[int] = []
        for prefix, by_network in self._by_prefix[address.version].items():
            network = value >> (bits - prefix) << (bits - prefix) if prefix else 0
            for index in by_network.get(network, ()):
                if not any(address in ex for ex in self.blocks[index].excepts):
                    inside.append(index)
        return address.version, frozenset(inside)
