"""``AddressClasses`` (prefix-table lookup, addresses read with ``inet_pton``) puts an address in exactly
the blocks ``IPBlock.contains`` (``ipaddress`` containment) puts it in, on random blocks with excepts of
both families and random addresses near their edges, in any spelling ``ipaddress`` accepts. It stands in
for the evaluator's ipBlock matching on the addresses of a real capture."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netpol_gen.evaluator.addresses import AddressClasses
from netpol_gen.evaluator.policy import IPBlock

BASES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/16"))


@st.composite
def networks(draw: st.DrawFn, inside: ipaddress.IPv4Network | ipaddress.IPv6Network) -> ipaddress._BaseNetwork:
    prefix = draw(st.integers(inside.prefixlen, inside.max_prefixlen))
    offset = draw(st.integers(0, inside.num_addresses - 1))
    return ipaddress.ip_network((int(inside.network_address) + offset, prefix), strict=False)


@st.composite
def blocks(draw: st.DrawFn) -> IPBlock:
    cidr = draw(networks(draw(st.sampled_from(BASES))))
    excepts = draw(st.lists(networks(cidr), max_size=3)) if cidr.num_addresses > 1 else []
    return IPBlock(cidr, tuple(excepts))


@st.composite
def addresses(draw: st.DrawFn, chosen: list[IPBlock]) -> str:
    near = [int(n.network_address) + d for b in chosen for n in (b.cidr, *b.excepts)
            for d in (-1, 0, int(n.num_addresses) - 1, int(n.num_addresses))]
    version = draw(st.sampled_from((4, 6)))
    top = (1 << (32 if version == 4 else 128)) - 1
    value = draw(st.one_of(st.integers(0, top), st.sampled_from(near or [0]).map(lambda v: max(0, min(v, top)))))
    address = ipaddress.ip_address(value & top) if version == 4 else ipaddress.IPv6Address(value & top)
    spelling = draw(st.sampled_from(("compressed", "exploded")))
    return getattr(address, spelling)


@settings(max_examples=300, deadline=None)
@given(st.lists(blocks(), min_size=1, max_size=6).flatmap(
    lambda chosen: st.tuples(st.just(chosen), st.lists(addresses(chosen), max_size=8))))
def test_classes_are_the_blocks_that_contain_the_address(case: tuple[list[IPBlock], list[str]]) -> None:
    chosen, ips = case
    classes = AddressClasses(chosen)
    for ip in ips:
        address = ipaddress.ip_address(ip)
        expected = frozenset(i for i, block in enumerate(classes.blocks) if block.contains(address))
        assert classes.of(ip) == (address.version, expected), ip


@pytest.mark.parametrize("ip", ["10.0.0.1", "fd00::1", "fe80::1%eth0", "::ffff:10.0.0.1", "0:0:0:0:0:0:0:1"])
def test_spellings_inet_pton_refuses_or_reads_are_read_as_ipaddress_reads_them(ip: str) -> None:
    classes = AddressClasses([IPBlock(ipaddress.ip_network("10.0.0.0/8")), IPBlock(ipaddress.ip_network("::/0"))])
    address = ipaddress.ip_address(ip)
    assert classes.of(ip) == (address.version, frozenset(
        i for i, block in enumerate(classes.blocks) if block.contains(address)))


def test_what_is_no_address_is_refused_as_ipaddress_refuses_it() -> None:
    with pytest.raises(ValueError):
        AddressClasses([IPBlock(ipaddress.ip_network("10.0.0.0/8"))]).of("01.2.3.4")
