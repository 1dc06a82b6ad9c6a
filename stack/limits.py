"""The file-descriptor limit the stack's processes inherit.

Every WebSocket is a descriptor in its chat process and two in HAProxy. A
shell's usual soft limit (1,024) would cap a chat process near a thousand
users and make HAProxy size its maxconn to match, so the stack raises the
limit before it starts anything: to the hard limit, or beyond it as root.
"""

from __future__ import annotations

import contextlib
import resource

# Enough descriptors for tens of thousands of sockets per process.
WANTED_NOFILE = 200_000


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
