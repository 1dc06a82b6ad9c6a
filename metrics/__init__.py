"""Process-wide counters and gauges, rendered in Prometheus text format.

One registry per process: every module that counts something declares its
metric here once, by name, and `/metrics` renders them all.
"""

from __future__ import annotations

from collections.abc import Callable


def _render(name: str, help_text: str, kind: str, value: float) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n{name} {value}\n"


class Counter:
    """A value that only goes up (reset by a process restart)."""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def render(self) -> str:
        return _render(self.name, self.help, "counter", self.value)


class Gauge:
    """A value read at render time from whoever owns it."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.name = name
        self.help = help_text
        self.read = read

    def render(self) -> str:
        return _render(self.name, self.help, "gauge", self.read())


_registry: dict[str, Counter | Gauge] = {}


def counter(name: str, help_text: str) -> Counter:
    """The counter called `name`, made on first use."""
    existing = _registry.get(name)
    if isinstance(existing, Counter):
        return existing
    made = Counter(name, help_text)
    _registry[name] = made
    return made


def gauge(name: str, help_text: str, read: Callable[[], float]) -> Gauge:
    """Register (or replace) the gauge called `name`."""
    made = Gauge(name, help_text, read)
    _registry[name] = made
    return made


def render() -> str:
    return "".join(metric.render() for _, metric in sorted(_registry.items()))
