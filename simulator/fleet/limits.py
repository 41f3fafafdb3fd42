"""Operating-system limits a big fleet runs into, checked before it starts.

- **Open files** (``RLIMIT_NOFILE``): every connection is a file descriptor. The soft limit
  is raised to the hard limit at start; each worker process has its own limit, so
  ``--workers`` divides the need.
- **Local ports**: a TCP connection is identified by (source address, source port,
  destination address, destination port). To one destination, one source address has only
  the ports of ``net.ipv4.ip_local_port_range`` (28,232 by default); more connections need
  more source addresses (``--source-ips 127.0.0.2-127.0.0.50`` on loopback, where all of
  127.0.0.0/8 is local). trio binds with ``IP_BIND_ADDRESS_NO_PORT``, so a port is shared by
  connections to different destinations.
"""
from __future__ import annotations

import ipaddress
import resource
import socket
from pathlib import Path

__all__ = [
    "FDS_PER_PROCESS_OVERHEAD", "LimitError", "check_local_ports", "check_open_files",
    "check_source_ips_usable", "local_port_range", "parse_source_ips", "raise_open_files_limit",
]

#: Descriptors a worker needs besides its handsets: Python, trio, pushers, the log, slack.
FDS_PER_PROCESS_OVERHEAD = 64
#: Upper bound on the addresses of one --source-ips range (a /16).
MAX_SOURCE_IPS = 65536


class LimitError(ValueError):
    """A limit stands in the way; the message says which and how to raise it."""


def parse_source_ips(text: str) -> tuple[str, ...]:
    """``"127.0.0.2-127.0.0.50"`` (or one address) → the addresses, in order.

    Raises :class:`LimitError` for a malformed or reversed range, mixed families, or more
    than 65,536 addresses.
    """
    first_text, dash, last_text = text.strip().partition("-")
    try:
        first = ipaddress.ip_address(first_text.strip())
        last = ipaddress.ip_address(last_text.strip()) if dash else first
    except ValueError:
        raise LimitError(
            f"--source-ips must be FIRST-LAST addresses, e.g. 127.0.0.2-127.0.0.50; got {text!r}"
        ) from None
    if first.version != last.version:
        raise LimitError(f"--source-ips: {first} and {last} are not of the same IP version")
    count = int(last) - int(first) + 1
    if count < 1:
        raise LimitError(f"--source-ips: {last} comes before {first}")
    if count > MAX_SOURCE_IPS:
        raise LimitError(f"--source-ips: {count} addresses is more than {MAX_SOURCE_IPS}")
    cls = type(first)
    return tuple(str(cls(int(first) + n)) for n in range(count))


def check_source_ips_usable(addresses: tuple[str, ...]) -> None:
    """Bind the first and last address once, so a non-local one fails before the run."""
    for address in {addresses[0], addresses[-1]}:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.bind((address, 0))
        except OSError as exc:
            raise LimitError(
                f"--source-ips: cannot use {address} as a source address: {exc.strerror}"
            ) from None


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return ``(soft, hard)`` after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft, hard


def check_open_files(handsets_per_process: int, workers: int) -> int:
    """Raise the limit and check it fits the busiest process; returns the limit.

    Raises :class:`LimitError` naming the need, the limit and the ways out.
    """
    soft, hard = raise_open_files_limit()
    need = handsets_per_process + FDS_PER_PROCESS_OVERHEAD
    if soft != resource.RLIM_INFINITY and need > soft:
        more = -(-handsets_per_process * workers // max(1, soft - FDS_PER_PROCESS_OVERHEAD))
        raise LimitError(
            f"{handsets_per_process} handsets in one process need about {need} open files, "
            f"but the limit is {soft} (hard limit {hard}); use --workers {max(more, workers + 1)} "
            "(each worker process has its own limit) or raise the hard limit "
            "(ulimit -Hn as root, LimitNOFILE= in systemd, nofile in /etc/security/limits.conf)"
        )
    return soft


def local_port_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> range:
    """The ephemeral port range (Linux); 32768–60999 when it cannot be read."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def check_local_ports(connections: int, source_ips: int, ports: range | None = None) -> None:
    """Connections to one destination must fit the local ports of the source addresses."""
    ports = ports if ports is not None else local_port_range()
    addresses = max(1, source_ips)
    per_address = -(-connections // addresses)
    if per_address > len(ports):
        needed = -(-connections // len(ports))
        raise LimitError(
            f"{connections} connections to one server from {addresses} source address(es) "
            f"need {per_address} local ports each, but ip_local_port_range "
            f"({ports.start}-{ports.stop - 1}) has {len(ports)}; spread them over at least "
            f"{needed} addresses, e.g. --source-ips 127.0.0.2-127.0.0.{min(254, needed + 1)}"
        )
