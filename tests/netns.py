"""Pretend "hosts" for the multi-host tests: network namespaces on one bridge.

    root namespace: bridge cf<tag>br  10.213.S.1/24  (Redis, and HAProxy's way in)
        ├── veth cf<tag>r1 ── namespace cf<tag>h1: cf<tag>n1 10.213.S.11/24
        ├── veth cf<tag>r2 ── namespace cf<tag>h2: cf<tag>n2 10.213.S.12/24
        └── ...

Every name carries a random tag and S is a /24 nobody routes yet, so two test
runs side by side never meet. Needs root and iproute2. `cut(i)` takes host
i's link down (its cable pulled); `close()` deletes everything made here.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field

SUBNET_PREFIX = "10.213"
HOST_OFFSET = 10  # host i is 10.213.S.(10 + i)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be built here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root: builds network namespaces and veth pairs (ip netns)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` (make test installs it)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


def namespaces_fail() -> str | None:
    """Try a namespace and a veth pair for real (root in a container may lack the
    capabilities); None when both work, else why not. Deletes what it made."""
    tag = uuid.uuid4().hex[:4]
    ns, veth = f"cf{tag}probe", f"cf{tag}pr"
    try:
        ip("netns", "add", ns)
    except RuntimeError as error:
        return f"cannot make a network namespace: {error}"
    try:
        ip("link", "add", veth, "type", "veth", "peer", "name", f"cf{tag}pn", "netns", ns)
    except RuntimeError as error:
        return f"cannot make a veth pair: {error}"
    finally:
        ip("netns", "del", ns)  # takes the pair with it
    return None


def ip(*args: str) -> None:
    """Run one `ip` command; a failure raises with its message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _unused_subnet() -> int:
    """A third octet S such that no address or route of this machine is in 10.213.S.0/24."""
    routes = subprocess.run(["ip", "-o", "route", "show", "table", "all"],
                            capture_output=True, text=True, check=False).stdout
    addrs = subprocess.run(["ip", "-o", "addr", "show"],
                           capture_output=True, text=True, check=False).stdout
    used = routes + addrs
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    for third in candidates:
        if f"{SUBNET_PREFIX}.{third}." not in used:
            return third
    raise RuntimeError(f"no free {SUBNET_PREFIX}.S.0/24")


@dataclass
class HostNet:
    """The namespaces and links of `count` pretend hosts; build with `open()`."""

    count: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:4])
    third: int = 0
    made_namespaces: list[str] = field(default_factory=list)
    made_bridge: bool = False

    @property
    def bridge(self) -> str:
        return f"cf{self.tag}br"

    @property
    def gateway(self) -> str:
        """The bridge's address in the root namespace: every host reaches it."""
        return f"{SUBNET_PREFIX}.{self.third}.1"

    def namespace(self, i: int) -> str:
        return f"cf{self.tag}h{i}"

    def root_end(self, i: int) -> str:
        return f"cf{self.tag}r{i}"

    def address(self, i: int) -> str:
        return f"{SUBNET_PREFIX}.{self.third}.{HOST_OFFSET + i}"

    def exec_prefix(self, i: int) -> list[str]:
        """Prefix a command with this to run it on host i (`ip netns exec` keeps the pid)."""
        return ["ip", "netns", "exec", self.namespace(i)]

    def open(self) -> None:
        """Make the bridge and hosts 1..count; on any failure undo what was made."""
        try:
            self.third = _unused_subnet()
            ip("link", "add", self.bridge, "type", "bridge")
            self.made_bridge = True
            ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for i in range(1, self.count + 1):
                self._add_host(i)
        except BaseException:
            self.close()
            raise

    def _add_host(self, i: int) -> None:
        ns, inner = self.namespace(i), f"cf{self.tag}n{i}"
        ip("netns", "add", ns)
        self.made_namespaces.append(ns)
        ip("link", "add", self.root_end(i), "type", "veth", "peer", "name", inner, "netns", ns)
        ip("link", "set", self.root_end(i), "master", self.bridge, "up")
        ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", inner)
        ip("-n", ns, "link", "set", inner, "up")
        ip("-n", ns, "link", "set", "lo", "up")

    def cut(self, i: int) -> None:
        """Host i drops off the network: its link goes down, nothing reaches it or leaves it."""
        ip("link", "set", self.root_end(i), "down")

    def mend(self, i: int) -> None:
        ip("link", "set", self.root_end(i), "up")

    def close(self) -> None:
        """Delete every namespace (their veth pairs go with them) and the bridge."""
        errors = []
        for ns in reversed(self.made_namespaces):
            try:
                ip("netns", "del", ns)
            except RuntimeError as error:
                errors.append(str(error))
        self.made_namespaces.clear()
        if self.made_bridge:
            try:
                ip("link", "del", self.bridge)
            except RuntimeError as error:
                errors.append(str(error))
            self.made_bridge = False
        if errors:
            raise RuntimeError("; ".join(errors))
