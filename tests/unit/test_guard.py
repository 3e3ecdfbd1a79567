"""Which addresses a replay may not go to (http/guard.py `refused`)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfheal.http.guard import refused


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.170.2", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("169.254.0.1", "a link-local address"),
        ("169.254.255.255", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fe80::1%eth0", "a link-local address"),
        ("febf:ffff::1", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),  # noqa: S104 - a destination, not a bind
        ("0.1.2.3", "an unspecified address"),
        ("::", "an unspecified address"),
        # IPv4-mapped IPv6: the same destination, the same answer.
        ("::ffff:169.254.169.254", "a cloud metadata address"),
        ("::ffff:a9fe:a9fe", "a cloud metadata address"),
        ("::ffff:169.254.7.7", "a link-local address"),
        ("::ffff:0.0.0.0", "an unspecified address"),
    ],
)
def test_metadata_link_local_and_unspecified_addresses_are_always_refused(
    address: str, why: str
) -> None:
    assert refused(ip_address(address), allow_loopback=False) == why
    assert refused(ip_address(address), allow_loopback=True) == why


@pytest.mark.parametrize("address", ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"])
def test_loopback_is_refused_unless_allowed(address: str) -> None:
    assert refused(ip_address(address), allow_loopback=False) == "a loopback address"
    assert refused(ip_address(address), allow_loopback=True) is None


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "10.0.0.5",  # a private network is the operator's, reachable on purpose
        "100.100.100.201",
        "169.255.0.1",
        "1.0.0.0",
        "2606:4700::1111",
        "fd00:ec2::253",
        "fec0::1",
        "::ffff:8.8.8.8",
    ],
)
def test_other_addresses_are_allowed(address: str) -> None:
    assert refused(ip_address(address), allow_loopback=False) is None


ipv4 = st.integers(0, 2**32 - 1).map(IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(IPv6Address)


@given(ipv4, st.booleans())
def test_an_ipv4_mapped_address_is_judged_as_its_ipv4(address: IPv4Address, loop: bool) -> None:
    mapped = IPv6Address(f"::ffff:{address}")
    assert refused(mapped, loop) == refused(address, loop)


@given(st.one_of(ipv4, ipv6))
def test_allowing_loopback_lifts_the_loopback_refusal_only(
    address: IPv4Address | IPv6Address,
) -> None:
    strict, lenient = refused(address, False), refused(address, True)
    assert lenient == (None if strict == "a loopback address" else strict)


@given(st.one_of(ipv4, ipv6))
def test_refused_agrees_with_the_standard_library(address: IPv4Address | IPv6Address) -> None:
    if address.is_link_local or address.is_loopback or address.is_unspecified:
        assert refused(address, False) is not None
    if address.is_global:
        assert refused(address, False) is None
