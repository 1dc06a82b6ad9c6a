"""Install the Node peer (bench/peers/node-socketio) for the bench targets and their smoke test.

    python -m bench.peers.node_install      # what `make node-peer` runs

Two steps, each skipped when already done: Debian's `nodejs` and `npm`
(stack/ensure-packages.sh: apt-get as root, otherwise it says what to
install and fails), then `npm ci` of the pinned packages (package-lock.json)
into bench/peers/node-socketio/node_modules (gitignored). `make run` and the
product never need any of it.
"""

from __future__ import annotations

import subprocess
import sys

from bench.targets import NODE_PEER_DIR
from stack.settings import PROJECT

PACKAGES = ("node=nodejs", "npm=npm")
# npm writes this file last in a finished install; older than the lock means stale.
INSTALLED_MARK = NODE_PEER_DIR / "node_modules" / ".package-lock.json"
LOCK = NODE_PEER_DIR / "package-lock.json"
TIMEOUT_SECONDS = 600.0


class NotInstallable(RuntimeError):
    """Node or npm is missing and this user may not install Debian packages."""


def installed() -> bool:
    """The packages of package-lock.json are in node_modules, as of the lock's last change."""
    return INSTALLED_MARK.exists() and INSTALLED_MARK.stat().st_mtime >= LOCK.stat().st_mtime


def ensure() -> None:
    """Install Node, npm and the peer's packages if any is missing; raise if that cannot be."""
    system = subprocess.run([str(PROJECT / "stack" / "ensure-packages.sh"), *PACKAGES],
                            capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    if system.returncode != 0:
        raise NotInstallable(system.stderr.strip() or "stack/ensure-packages.sh failed")
    if not installed():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=NODE_PEER_DIR, check=True, timeout=TIMEOUT_SECONDS)


def main() -> None:
    try:
        ensure()
    except NotInstallable as error:
        sys.exit(str(error))
    print(f"node peer ready: {NODE_PEER_DIR}")


if __name__ == "__main__":
    main()
