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

Counters and histograms are taken per message, so their values are kept
here in plain numbers and handed to prometheus_client as custom collectors
at each render: an `inc` is an addition and an `observe` a bisect, where
prometheus_client's own take a lock each (0.7 and 1.5 µs). prometheus_client
still owns the registry, the name checks and the exposition. They are
counted from the event loop's thread only (a thread's `+=` could lose a
count); labelled counters, never per message, stay prometheus_client's.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# Process-wide switch of prometheus_client (checked at every render), the only
# way it offers to leave the `_created` samples out; this module owns the
# process's metrics, so it sets it.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

COUNTER_SUFFIX = "_total"

_REGISTRY = CollectorRegistry()
_counters: dict[str, Counter] = {}


class Counter(Collector):
    """A value that only goes up (reset by a process restart)."""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self._family = name.removesuffix(COUNTER_SUFFIX)
        self._help = help_text
        self._count = 0.0
        _REGISTRY.register(self)  # raises ValueError on a name already on the page

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self._count += amount

    @property
    def value(self) -> float:
        """The count now, as `/metrics` shows it."""
        return _REGISTRY.get_sample_value(self.name) or 0.0

    def describe(self) -> list[Metric]:
        """The names this takes on the page (the registry refuses a second taker)."""
        return [CounterMetricFamily(self._family, self._help)]

    def collect(self) -> list[Metric]:
        return [CounterMetricFamily(self._family, self._help, value=self._count)]


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


class Histogram(Collector):
    """How many observations fell at or under each bucket's bound, and their sum."""

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name = name
        self._help = help_text
        self._bounds = sorted(float(b) for b in buckets if b != float("inf")) + [float("inf")]
        self._counts = [0] * len(self._bounds)  # per bucket, not cumulative
        self._sum = 0.0
        _REGISTRY.register(self)

    def observe(self, amount: float) -> None:
        self._counts[bisect_left(self._bounds, amount)] += 1  # the first bound >= amount
        self._sum += amount

    @contextmanager
    def time(self) -> Iterator[None]:
        """Observe the seconds the block takes, however it ends."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started)

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self._help)]

    def collect(self) -> list[Metric]:
        cumulative, buckets = 0, []
        for bound, count in zip(self._bounds, self._counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
        return [HistogramMetricFamily(self.name, self._help, buckets=buckets,
                                      sum_value=self._sum)]


def histogram(name: str, help_text: str, buckets: Sequence[float]) -> Histogram:
    """A histogram of seconds (`name` ends in `_seconds`): where a mean hides the tail.

    One observe costs a bisect of the bounds, but it is still taken per
    message or per request, never per delivery to a socket.
    """
    if not name.endswith("_seconds"):
        raise ValueError(f"histogram {name!r} must end in '_seconds'")
    return Histogram(name, help_text, buckets)


def render() -> str:
    """Every metric of this process in the Prometheus text exposition format."""
    return generate_latest(_REGISTRY).decode()
