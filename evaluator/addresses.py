"""Addresses by what policies can see of them: their IP family and the set of address blocks
(ipBlocks, CIDR sets, Calico nets) of a policy set that contain them.

Two addresses in the same blocks are matched alike by every address rule of the set, so caches keyed
by this class instead of the address hold one entry per class, however many addresses a capture
names. Finding the blocks of a new address is one dictionary lookup per distinct prefix length among
the blocks (the address masked to that length), then the ``except`` check of the few candidates: no
scan of the blocks. The address is read with ``inet_pton`` into an int (:func:`address_value`: no
``ipaddress`` object, which costs ~25 us an address in Python, a third of classifying a new connection's ends).
"""

from __future__ import annotations

from collections.abc import Iterable

from netpol_gen.evaluator.policy import IPBlock
from netpol_gen.model.cluster import address_value, remember

AddressClass = tuple[int, frozenset[int]]  # IP version, indices of the blocks containing the address


class AddressClasses:
    """The classes of addresses for one set of blocks; :meth:`of` is memoised per address."""

    def __init__(self, blocks: Iterable[IPBlock]) -> None:
        self.blocks: list[IPBlock] = list(dict.fromkeys(blocks))
        self.index = {block: index for index, block in enumerate(self.blocks)}  # what :meth:`of`'s sets hold
        # version -> prefix length -> network address as int -> indices of the blocks with that cidr
        self._by_prefix: dict[int, dict[int, dict[int, list[int]]]] = {4: {}, 6: {}}
        self._excepts: list[tuple[tuple[int, int], ...]] = []  # per block: its excepts as int ranges
        for index, block in enumerate(self.blocks):
            cidr = block.cidr
            by_network = self._by_prefix[cidr.version].setdefault(cidr.prefixlen, {})
            by_network.setdefault(int(cidr.network_address), []).append(index)
            self._excepts.append(tuple((int(ex.network_address), int(ex.broadcast_address))
                                       for ex in block.excepts if ex.version == cidr.version))
        self._cache: dict[str, AddressClass] = {}

    def of(self, ip: str) -> AddressClass:
        found = self._cache.get(ip)
        if found is None:
            found = remember(self._cache, ip, self._classify(ip))
        return found

    def _classify(self, ip: str) -> AddressClass:
        version, value = address_value(ip)
        bits = 32 if version == 4 else 128
        inside: list[int] = []
        for prefix, by_network in self._by_prefix[version].items():
            network = value >> (bits - prefix) << (bits - prefix) if prefix else 0
            for index in by_network.get(network, ()):
                if not any(low <= value <= high for low, high in self._excepts[index]):
                    inside.append(index)
        return version, frozenset(inside)
