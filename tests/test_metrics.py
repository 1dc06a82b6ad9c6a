"""`metrics` on prometheus_client: the page parses, names are the documented ones, counters
count, a name is taken once, histograms fill their buckets, labelled series start at 0
and a client cannot invent labels, and MetricsHandler serves it with the library's
content type.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.testing
import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

import handlers  # noqa: F401  (declares the handlers' metrics)
import metrics
import pubsub.sharded  # noqa: F401  (declares the Cluster subscriber's metrics)
import pubsub.subscriber  # noqa: F401
from handlers.health import MetricsHandler
from handlers.outcomes import ERROR_CODES, SERVER_CLOSE_CODES, count_close
from metrics import COUNTER_SUFFIX
from redisconn import topology_of
from runtime import ChatProcess, Config

PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def documented_names() -> set[str]:
    """The metric names docs/protocol.md lists in its `GET /metrics` row."""
    row = next(line for line in PROTOCOL.read_text().splitlines()
               if line.startswith("| `GET /metrics`"))
    return set(re.findall(r"`(chat_\w+)`", row))


def samples(text: str) -> dict[str, float]:
    """{sample name: value} of a page, read by prometheus_client's own parser."""
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples}


def metrics_value(name: str, **labels: str) -> float:
    """One sample's value on the page now, by name and labels (0 if absent)."""
    for family in text_string_to_metric_families(metrics.render()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


# A chat process declares the gauges it owns (chat_open_sockets); this one is
# never started, so its Redis client never connects.
PROCESS = ChatProcess(Config(instance="metrics-test", cookie_secret="unused"),
                      topology_of(Redis()))


def fresh(prefix: str) -> str:
    return f"test_{prefix}_{uuid.uuid4().hex[:8]}"


def exposed_kinds(text: str) -> dict[str, str]:
    """{exposed name: type} of a page: a counter by its `_total` name, a histogram by
    its family name (its samples are `_bucket`, `_sum` and `_count`)."""
    kinds = {}
    for family in text_string_to_metric_families(text):
        suffix = COUNTER_SUFFIX if family.type == "counter" else ""
        kinds[family.name + suffix] = family.type
        if family.type == "histogram":
            assert {s.name for s in family.samples} == {
                family.name + end for end in ("_bucket", "_sum", "_count")}
        else:
            assert {s.name for s in family.samples} <= {family.name + suffix}
    return kinds


def test_the_page_parses_and_shows_exactly_the_documented_names() -> None:
    documented = documented_names()
    assert "chat_frames_in_total" in documented and "chat_open_sockets" in documented
    assert "chat_publish_seconds" in documented and "chat_errors_sent_total" in documented
    text = metrics.render()
    kinds = {name: kind for name, kind in exposed_kinds(text).items()
             if name.startswith("chat_")}
    assert set(kinds) == documented  # no `_total_total`, no `_created`, nothing undocumented
    for name in documented:
        kind = ("counter" if name.endswith("_total") else
                "histogram" if name.endswith("_seconds") else "gauge")
        assert kinds[name] == kind
        assert f"# TYPE {name} {kind}\n" in text


def test_labelled_series_exist_at_zero_before_anything_counts() -> None:
    """A rate over an error code or a close code needs its series before the first one."""
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(metrics.render())
              for s in family.samples}
    for code in ERROR_CODES:
        assert ("chat_errors_sent_total", (("code", code),)) in values
    for code in SERVER_CLOSE_CODES:
        assert ("chat_socket_closes_total", (("by", "server"), ("code", code))) in values


def test_a_close_code_a_client_makes_up_is_counted_as_other() -> None:
    def closes(code: str, by: str) -> float:
        return metrics_value("chat_socket_closes_total", code=code, by=by)

    other, normal = closes("other", "client"), closes("1000", "client")
    dropped, drained = closes("1006", "client"), closes("1012", "server")
    count_close(0, 4999)
    count_close(0, 1000)
    count_close(0, None)
    count_close(1012, 1012)  # the client echoed the server's code: the server's close
    assert closes("other", "client") == other + 1
    assert closes("1000", "client") == normal + 1
    assert closes("1006", "client") == dropped + 1
    assert closes("1012", "server") == drained + 1
    assert closes("4999", "client") == 0


def test_a_histogram_counts_each_observation_in_its_buckets() -> None:
    name = fresh("waited") + "_seconds"
    waited = metrics.histogram(name, "Waits a test makes up", (0.01, 0.1, 1.0))
    for seconds in (0.005, 0.05, 0.05, 5.0):
        waited.observe(seconds)
    assert metrics_value(name + "_bucket", le="0.01") == 1
    assert metrics_value(name + "_bucket", le="0.1") == 3
    assert metrics_value(name + "_bucket", le="+Inf") == 4
    assert metrics_value(name + "_count") == 4
    assert metrics_value(name + "_sum") == 5.105
    with pytest.raises(ValueError, match="_seconds"):
        metrics.histogram(fresh("bare"), "Not in seconds", (1.0,))


def test_an_observation_on_a_bound_falls_in_that_bucket_and_time_observes() -> None:
    """`le` is "less than or equal": 0.1 belongs to the 0.1 bucket, not the next."""
    name = fresh("bounded") + "_seconds"
    bounded = metrics.histogram(name, "Bounds a test hits", (0.1, 1.0))
    bounded.observe(0.1)
    bounded.observe(1.0)
    assert metrics_value(name + "_bucket", le="0.1") == 1
    assert metrics_value(name + "_bucket", le="1.0") == 2
    with pytest.raises(KeyError), bounded.time():  # a block that fails is timed too
        raise KeyError("failed")
    assert metrics_value(name + "_count") == 3
    assert metrics_value(name + "_bucket", le="0.1") == 2


def test_a_counter_refuses_to_go_down_and_a_taken_name() -> None:
    name = fresh("downward") + "_total"
    downward = metrics.counter(name, "Things a test counts")
    with pytest.raises(ValueError, match="only goes up"):
        downward.inc(-1)
    assert downward.value == 0
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        metrics.gauge(name.removesuffix("_total"), "a gauge on a counter's name", lambda: 1.0)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        metrics.Counter(name, "a second counter of the same name")


def test_a_counter_counts_and_is_shared_by_name() -> None:
    name = fresh("counted") + "_total"
    counted = metrics.counter(name, "Things counted by a test")
    assert samples(metrics.render())[name] == 0
    counted.inc()
    counted.inc(41)
    assert samples(metrics.render())[name] == 42
    assert counted.value == 42
    assert metrics.counter(name, "") is counted
    assert not any(s.endswith("_created") for s in samples(metrics.render()))


def test_a_counter_name_must_end_in_total() -> None:
    with pytest.raises(ValueError, match="_total"):
        metrics.counter(fresh("bare"), "A counter without its suffix")


def test_a_gauge_reads_its_owner_at_each_render() -> None:
    name = fresh("level")
    level = [3.0]
    metrics.gauge(name, "A level a test owns", lambda: level[0])
    assert samples(metrics.render())[name] == 3
    level[0] = 7
    assert samples(metrics.render())[name] == 7


def test_a_second_gauge_of_one_name_is_refused_and_the_first_stays() -> None:
    name = fresh("once")
    metrics.gauge(name, "First", lambda: 1.0)
    with pytest.raises(ValueError, match=name):
        metrics.gauge(name, "Second", lambda: 2.0)
    with pytest.raises(ValueError):
        metrics.gauge("chat_open_sockets", "Again", lambda: 0.0)
    assert samples(metrics.render())[name] == 1


def test_a_name_taken_by_a_counter_is_refused_to_a_gauge_and_back() -> None:
    counted = fresh("taken") + "_total"
    metrics.counter(counted, "A counter")
    with pytest.raises(ValueError):
        metrics.gauge(counted, "A gauge over it", lambda: 0.0)
    gauged = fresh("gauged") + "_total"
    metrics.gauge(gauged, "A gauge", lambda: 0.0)
    with pytest.raises(ValueError):
        metrics.counter(gauged, "A counter over it")


@pytest.fixture
async def metrics_url() -> AsyncIterator[str]:
    """MetricsHandler alone on a free loopback port."""
    sock, port = tornado.testing.bind_unused_port()
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/metrics", MetricsHandler)]))
    server.add_sockets([sock])
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        server.stop()
        await server.close_all_connections()


async def test_the_handler_serves_the_page_with_the_libraries_content_type(
    metrics_url: str,
) -> None:
    client = tornado.httpclient.AsyncHTTPClient()
    answer = await client.fetch(metrics_url)
    assert answer.code == 200
    assert answer.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert documented_names() <= set(exposed_kinds(answer.body.decode()))
