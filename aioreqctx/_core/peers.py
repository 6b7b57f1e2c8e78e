"""Which peers a server believes: trusted networks, and a peer address as one IP address.

The middleware takes incoming IDs and deadlines only from peers in its ``trusted_networks``,
``DebugOnDemand`` turns on DEBUG lines only for them, and the in-flight page's default guard
admits only loopback peers: one reading of ``request.remote`` serves all three.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings as networks; raises ValueError naming the bad entry."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as error:
            raise ValueError(
                f"trusted_networks: {cidr!r} is not a network; use CIDR such as '10.0.0.0/8'"
            ) from error
    return tuple(networks)


def peer_address(remote: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer address (``request.remote``) as an IP address, None for none (a Unix socket).

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``: an IPv4 peer of a dual-stack socket) is
    the IPv4 address it stands for, so every rule on peers gives one answer on every Python
    (3.13's ``is_loopback`` unmaps it, 3.11's and 3.12's do not).
    """
    if remote is None:
        return None
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(remote: str | None, networks: tuple[Network, ...]) -> bool:
    """Whether a peer address (``request.remote``) is inside one of ``networks``."""
    address = peer_address(remote)
    return address is not None and any(address in network for network in networks)
