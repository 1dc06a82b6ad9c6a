"""Process-wide counters, gauges and histograms for `/metrics`, kept by prometheus_client.

Every module that counts something declares its metric here once, by name, at
import time; `render()` gives the Prometheus text exposition of them all.

One registry per process, owned by this module (not prometheus_client's global
default): `/metrics` shows exactly the metrics chatfleet declares (the names in
docs/protocol.md), and nothing a library registers on the default registry at
import time (the default's process and GC collectors included) joins them
unasked.

Names are the exposed names. Counter names end in `_total`, as Prometheus
wants; prometheus_client keeps the family name without it and adds it back
when it renders, so `chat_frames_in_total` is exposed as itself. The
`*_created` series prometheus_client adds to every counter are switched off:
nothing here reads them, and they would double the names on the page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest

# Process-wide switch of prometheus_client (checked at every render), the only
# way it offers to leave the `_created` samples out; this module owns the
# process's metrics, so it sets it.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

COUNTER_SUFFIX = "_total"

_REGISTRY = CollectorRegistry()
_counters: dict[str, Counter] = {}


class Counter:
    """A value that only goes up (reset by a process restart)."""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self._counter = prometheus_client.Counter(name, help_text, registry=_REGISTRY)

    def inc(self, amount: float = 1) -> None:
        self._counter.inc(amount)

    @property
    def value(self) -> float:
        """The count now, as `/metrics` shows it."""
        return _REGISTRY.get_sample_value(self.name) or 0.0


def counter(name: str, help_text: str) -> Counter:
    """The counter called `name` (ending in `_total`), made on first use.

    A second call with the same name returns the same counter, so a test can
    read one by name. A name some other metric has already taken (a gauge, or
    any name that would clash on the page) raises ValueError.
    """
    existing = _counters.get(name)
    if existing is not None:
        return existing
    if not name.endswith(COUNTER_SUFFIX):
        raise ValueError(f"counter {name!r} must end in {COUNTER_SUFFIX!r}")
    made = Counter(name, help_text)  # raises ValueError on a clash
    _counters[name] = made
    return made


def gauge(name: str, help_text: str, read: Callable[[], float]) -> None:
    """Register the gauge called `name`, read by calling `read()` at each render.

    Once per name and process: a second gauge of the same name (or any name
    already on the page) raises ValueError, whatever its reader. Two readers
    of one name are a bug; replacing the first silently would hide it.
    """
    made = prometheus_client.Gauge(name, help_text, registry=_REGISTRY)
    made.set_function(read)


def labelled_counter(name: str, help_text: str, labels: Sequence[str],
                     known: Sequence[Sequence[str]] = ()) -> prometheus_client.Counter:
    """A counter with one series per value of `labels` (e.g. an error `code`).

    Every label value must come from a small set the process chooses, never
    from a client, or the page grows without bound. The series of `known`
    values start at 0, so a rate over them exists before the first one counts.
    """
    if not name.endswith(COUNTER_SUFFIX):
        raise ValueError(f"counter {name!r} must end in {COUNTER_SUFFIX!r}")
    made = prometheus_client.Counter(name, help_text, labels, registry=_REGISTRY)
    for values in known:
        made.labels(*values)
    return made


def histogram(name: str, help_text: str, buckets: Sequence[float]) -> prometheus_client.Histogram:
    """A histogram of seconds (`name` ends in `_seconds`): where a mean hides the tail.

    One observe costs about a microsecond (a scan of the buckets), so it is
    taken per message or per request, never per delivery to a socket.
    """
    if not name.endswith("_seconds"):
        raise ValueError(f"histogram {name!r} must end in '_seconds'")
    return prometheus_client.Histogram(name, help_text, buckets=buckets, registry=_REGISTRY)


def render() -> str:
    """Every metric of this process in the Prometheus text exposition format."""
    return generate_latest(_REGISTRY).decode()
