"""The network of the hosts lab: a bridge in the root namespace, one network namespace per
host joined to it by a veth pair, addresses from a /24 of 198.18.0.0/15 that overlaps nothing
already on the machine (its own network must never be shadowed: see REFERENCE §7).

Names carry a short tag of the lab so that two labs never touch each other's links:
bridge `rb<tag>br`, namespace `rb-<tag>-<host>`, root-side veth `rb<tag>v<index>`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterable

from runbook_lib.errors import ConfigurationError, PreconditionError
from runbook_lib.host import LOCAL

log = logging.getLogger("runbook_lib")

LAB_RANGE = ipaddress.ip_network("198.18.0.0/15")
FORBIDDEN = (ipaddress.ip_network("192.0.2.0/24"),)  # this machine kind's own network
BRIDGE_HOST_NUMBER = 1
FIRST_HOST_NUMBER = 11


def bridge_name(tag: str) -> str:
    return f"rb{tag}br"


def netns_name(tag: str, host: str) -> str:
    return f"rb-{tag}-{host}"


def veth_name(tag: str, index: int) -> str:
    return f"rb{tag}v{index}"


def _ip_json(*args: str) -> list[dict]:
    out = LOCAL.run(["ip", "-j", *args]).stdout
    return json.loads(out) if out.strip() else []


def networks_in_use() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every network an address or a route of the machine covers (`ip -j addr`, `ip -j route
    show table all`)."""
    found = []
    for link in _ip_json("addr"):
        for info in link.get("addr_info", []):
            found.append(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network)
    for route in _ip_json("route", "show", "table", "all"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            try:
                found.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                continue
    return found


def _overlaps(net: ipaddress.IPv4Network, used: Iterable) -> bool:
    return any(net.version == u.version and net.overlaps(u) for u in used)


def check_subnet_format(subnet: str) -> ipaddress.IPv4Network:
    """A /24 inside 198.18.0.0/15 (never the machine's own 192.0.2.0/24)."""
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as exc:
        raise ConfigurationError(f"{subnet!r} is not a network: {exc}") from None
    if (
        net.version != 4
        or net.prefixlen != 24
        or not net.subnet_of(LAB_RANGE)
        or _overlaps(net, FORBIDDEN)
    ):
        raise ConfigurationError(f"the lab's subnet must be a /24 inside {LAB_RANGE}, not {net}")
    return net


def check_subnet(subnet: str) -> ipaddress.IPv4Network:
    """A /24 of 198.18.0.0/15 that overlaps no address or route of the machine."""
    net = check_subnet_format(subnet)
    if _overlaps(net, networks_in_use()):
        raise PreconditionError(
            f"{net} overlaps an address or route already on this machine (ip addr, ip route); "
            "choose another /24 of 198.18.0.0/15"
        )
    return net


def choose_subnet(start: int) -> ipaddress.IPv4Network:
    """The first free /24 of 198.18.0.0/15 from the `start`-th one on (wrapping around)."""
    used = [*networks_in_use(), *FORBIDDEN]
    subnets = list(LAB_RANGE.subnets(new_prefix=24))
    for i in range(len(subnets)):
        net = subnets[(start + i) % len(subnets)]
        if not _overlaps(net, used):
            return net
    raise PreconditionError(f"no /24 of {LAB_RANGE} is free on this machine")


def host_address(net: ipaddress.IPv4Network, index: int) -> str:
    return str(net.network_address + FIRST_HOST_NUMBER + index)


def bridge_address(net: ipaddress.IPv4Network) -> str:
    return str(net.network_address + BRIDGE_HOST_NUMBER)


def link_exists(name: str) -> bool:
    return LOCAL.run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def netns_exists(name: str) -> bool:
    return any(ns.get("name") == name for ns in _ip_json("netns", "list"))


def create_bridge(name: str, net: ipaddress.IPv4Network) -> None:
    if not link_exists(name):
        LOCAL.run(["ip", "link", "add", name, "type", "bridge"])
        LOCAL.run(["ip", "addr", "add", f"{bridge_address(net)}/{net.prefixlen}", "dev", name])
        _check_alone(name, net)
    LOCAL.run(["ip", "link", "set", name, "up"])


def _check_alone(bridge: str, net: ipaddress.IPv4Network) -> None:
    """Another lab starting at the same moment may have taken the same /24: refuse."""
    for link in _ip_json("addr"):
        if link.get("ifname") == bridge:
            continue
        for info in link.get("addr_info", []):
            other = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network
            if _overlaps(net, [other]):
                LOCAL.run(["ip", "link", "del", bridge])
                raise PreconditionError(
                    f"{net} was just taken by {link.get('ifname')}; run lab up again"
                )


def create_host_link(tag: str, index: int, host: str, net: ipaddress.IPv4Network) -> None:
    """Namespace `host` with eth0 (its address) paired with a veth on the bridge."""
    ns, veth = netns_name(tag, host), veth_name(tag, index)
    if not netns_exists(ns):
        LOCAL.run(["ip", "netns", "add", ns])
    if not link_exists(veth):
        LOCAL.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        address = f"{host_address(net, index)}/{net.prefixlen}"
        LOCAL.run(["ip", "-n", ns, "addr", "add", address, "dev", "eth0"])
    LOCAL.run(["ip", "link", "set", veth, "master", bridge_name(tag), "up"])
    LOCAL.run(["ip", "-n", ns, "link", "set", "lo", "up"])
    LOCAL.run(["ip", "-n", ns, "link", "set", "eth0", "up"])


def set_link(tag: str, index: int, up: bool) -> None:
    """Cut (down) or heal (up) a host's link: its veth on the bridge side."""
    LOCAL.run(["ip", "link", "set", veth_name(tag, index), "up" if up else "down"])


def link_is_up(tag: str, index: int) -> bool:
    links = _ip_json("link", "show", "dev", veth_name(tag, index))
    return bool(links) and "UP" in links[0].get("flags", [])


def netns_pids(ns: str) -> list[int]:
    if not netns_exists(ns):
        return []
    out = LOCAL.run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split()]


def delete_host_link(tag: str, index: int, host: str) -> None:
    veth, ns = veth_name(tag, index), netns_name(tag, host)
    if link_exists(veth):
        LOCAL.run(["ip", "link", "del", veth])
    if netns_exists(ns):
        LOCAL.run(["ip", "netns", "del", ns])


def delete_bridge(tag: str) -> None:
    if link_exists(bridge_name(tag)):
        LOCAL.run(["ip", "link", "del", bridge_name(tag)])
