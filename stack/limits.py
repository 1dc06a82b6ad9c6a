"""The file-descriptor limit the stack's processes inherit.

Every WebSocket is a descriptor in its chat process and two in HAProxy. A
shell's usual soft limit (1,024) would cap a chat process near a thousand
users and make HAProxy size its maxconn to match, so the stack raises the
limit before it starts anything: to the hard limit, or beyond it as root.
"""

from __future__ import annotations

import contextlib
import resource

# HAProxy takes two descriptors per proxied connection and sizes its maxconn
# from the limit it inherits: 100,000 WebSockets on one box (`make idle100k`)
# and the logins beside them need over 200,000.
WANTED_NOFILE = 262_144
# Descriptors HAProxy 2.6 keeps for itself (listeners, checks, its stats socket):
# under a limit of 20,000 it takes a maxconn of 9,985.
HAPROXY_FD_RESERVE = 30


def raise_nofile(wanted: int = WANTED_NOFILE) -> int:
    """Raise this process's (and its future children's) fd limit as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    with contextlib.suppress(ValueError, OSError):  # not root: the hard limit stays
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
        return wanted
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def front_door_connections(nofile: int) -> int:
    """About how many connections one HAProxy holds under an fd limit of `nofile`."""
    return max(0, (nofile - HAPROXY_FD_RESERVE) // 2)


def limit_note(nofile: int) -> str:
    """What an fd limit below WANTED_NOFILE caps, and how to raise it; "" if none."""
    if nofile >= WANTED_NOFILE:
        return ""
    return (f"file-descriptor limit {nofile:,} (the hard limit; only root with "
            f"CAP_SYS_RESOURCE goes past it): HAProxy holds about "
            f"{front_door_connections(nofile):,} connections, a chat process fewer than "
            f"{nofile:,} sockets")
