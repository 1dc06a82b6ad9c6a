"""docs/ops on the real programs: promtool checks the scrape config and the alert rules
(and runs their unit tests); a real Prometheus, configured from docs/ops, scrapes every
instance, HAProxy's exporter and the Redis exporter of the session's stack, knows every
metric the dashboard and the rules name, draws its graph page after real traffic
(docs/screenshots/prometheus.png), and fires ChatInstanceDown once an instance is
killed and kept down.

The one change to the shipped files: every second instead of every 15 s, and
ChatInstanceDown's `for:` of a minute shortened to 2 s, so the test takes seconds
(rigs/prometheus.py: ops_config). The shipped `for:` values are what
`promtool test rules` checks.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, ViewportSize, expect

from chatclient import ChatSocket, HttpSession
from rigs.ports import free_port
from rigs.prometheus import OPS, Prometheus, RedisExporter, ops_config
from stack.run import Stack
from stack.status import report
from tests.browser_support import SCREENSHOTS, browser, png_size
from tests.conftest import unique

__all__ = ["browser"]  # a fixture, imported for pytest to find

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="prometheus is not installed (make test installs it)")

WAIT = 45.0
# The screenshot's traffic: long enough for a graph, within the chat rate limit
# (20 per 10 s per user).
TRAFFIC_SECONDS = 25.0
USERS_PER_INSTANCE = 3
SAY_EVERY_SECONDS = 0.6
INSTANCE_DOWN_FOR = "2s"
# What is left of an expression once its selectors, ranges and grouping clauses are
# gone: metric names, and functions and aggregations (each followed by `(`).
NAME = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right"}
SELECTOR_RANGE_OR_GROUPING = re.compile(
    r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# Grafana's own variable; it stands for a range Grafana picks (here: a minute).
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}


def promtool(*args: str) -> str:
    done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_promtool_accepts_the_config_and_the_rules_and_their_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("check", "config", str(OPS / "prometheus.yml"))
    assert "SUCCESS: 12 rules found" in promtool("check", "rules", str(OPS / "alerts.yml"))
    assert "SUCCESS" in promtool("test", "rules", str(OPS / "alerts-test.yml"))


def rule_expressions() -> list[str]:
    import yaml
    rules = yaml.safe_load((OPS / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((OPS / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", [])]
    assert len(exprs) >= 20
    return exprs


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (its label values and functions aside)."""
    bare = SELECTOR_RANGE_OR_GROUPING.sub(" ", expr)
    return set(NAME.findall(bare)) - KEYWORDS


def test_names_are_read_from_expressions() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(chat_publish_seconds_bucket{job="x"}[5m])))'
    ) == {"chat_publish_seconds_bucket"}
    assert metric_names('redis_up{job="redis"} == 0 or up{job="redis"} == 0') == {
        "redis_up", "up"}
    assert metric_names(
        'sum by (code, by) (rate(chat_socket_closes_total{job="chatfleet"}[1m])) '
        '/ on (instance) group_left count(up) > bool 0.5') == {"chat_socket_closes_total", "up"}


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A Prometheus (and the Redis exporter) over the session's stack, by pid."""
    folder = tmp_path_factory.mktemp("prometheus")
    exporter = RedisExporter(stack.settings.effective_redis_url, free_port(), folder)
    exporter.start()
    config = ops_config(folder, {
        "chatfleet": [u.removeprefix("http://") for u in stack.instance_urls()],
        "haproxy": [stack.settings.haproxy_metrics_bind],
        "redis": [exporter.target],
    }, short_for={"ChatInstanceDown": INSTANCE_DOWN_FOR})
    server = Prometheus(config, free_port(), folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        exporter.stop()


def up_by_target(prometheus: Prometheus) -> dict[str, str]:
    return {r["metric"]["instance"]: r["value"][1] for r in prometheus.query("up")}


def test_every_target_is_scraped_and_every_named_metric_exists(
        stack: Stack, prometheus: Prometheus) -> None:
    targets = [u.removeprefix("http://") for u in stack.instance_urls()]
    targets += [stack.settings.haproxy_metrics_bind]
    expected = {t: "1" for t in targets}
    prometheus.wait_for("up == 1 for every instance, HAProxy and Redis", lambda: (
        len(up := up_by_target(prometheus)) == len(targets) + 1
        and set(up.values()) == {"1"} and expected.items() <= up.items()), WAIT)
    assert prometheus.query('redis_up{job="redis"}')[0]["value"][1] == "1"

    known = set(prometheus.api("label/__name__/values"))
    for expr in rule_expressions() + dashboard_expressions():
        missing = metric_names(expr) - known
        assert not missing, f"{missing} of {expr!r} not scraped"
    for expr in dashboard_expressions():  # each one a query Prometheus takes
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        prometheus.query(expr)


async def chat_traffic(stack: Stack, seconds: float) -> None:
    """Three users on each instance in one room, each saying something every 0.6 s
    (under the chat rate limit), each fourth line a frame the server refuses."""
    room = unique("graphed")
    sessions, sockets = [], []
    for url in stack.instance_urls() * USERS_PER_INSTANCE:
        http = HttpSession(url)
        await http.login(unique("graph"))
        sock = await ChatSocket.connect(http)
        await sock.send({"type": "join", "room": room})
        await sock.next_of("presence", room=room)
        sessions.append(http)
        sockets.append(sock)

    async def talk(sock: ChatSocket) -> None:
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            n += 1
            if n % 4 == 0:
                await sock.send({"type": "chat", "room": unique("not-joined"), "text": "x"})
            else:
                await sock.send({"type": "chat", "room": room, "text": f"line {n}",
                                 "cid": f"c{n}"})
                await sock.next_of("ack", cid=f"c{n}")
            await asyncio.sleep(SAY_EVERY_SECONDS)

    try:
        await asyncio.gather(*(talk(sock) for sock in sockets))
    finally:
        for sock in sockets:
            sock.close()
        for http in sessions:
            http.close()


GRAPHS = {  # the classic graph page's panels: what a dashboard shows first
    "histogram_quantile(0.99, sum by (instance, le) "
    "(rate(chat_publish_seconds_bucket[10s])))": "publish round trip p99, per instance",
    "sum by (instance) (rate(chat_frames_out_total[10s]))": "frames written / s, per instance",
}
SCREENSHOT = SCREENSHOTS / "prometheus.png"
VIEWPORT: ViewportSize = {"width": 1280, "height": 1560}


@pytest.mark.browser
def test_screenshot_of_the_graph_page_after_real_traffic(
        stack: Stack, prometheus: Prometheus, browser: Browser) -> None:
    """docs/screenshots/prometheus.png: Prometheus's own graph page (Debian's build has
    the classic UI) over half a minute of chat on both instances."""
    talker = threading.Thread(target=asyncio.run, args=(chat_traffic(stack, TRAFFIC_SECONDS),))
    talker.start()
    talker.join(TRAFFIC_SECONDS + WAIT)
    assert not talker.is_alive()
    assert float(prometheus.query("sum(chat_publish_seconds_count)")[0]["value"][1]) > 0

    query = {"g0.range_input": "30s", "g1.range_input": "30s"}
    for n, expr in enumerate(GRAPHS):
        query |= {f"g{n}.expr": expr, f"g{n}.tab": "0", f"g{n}.stacked": "0"}
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(f"{prometheus.url}/classic/graph?{urllib.parse.urlencode(query)}")
        expect(page.locator(".graph_area")).to_have_count(len(GRAPHS))
        for n in range(len(GRAPHS)):  # each drew a line per instance
            lines = page.locator(".graph_area").nth(n).locator(".graph svg path.path")
            expect(lines).to_have_count(len(stack.instance_urls()))
        page.screenshot(path=SCREENSHOT)
    finally:
        page.close()
    assert png_size(SCREENSHOT) == (VIEWPORT["width"], VIEWPORT["height"])


@pytest.fixture
def restored(stack: Stack) -> Iterator[Stack]:
    yield stack
    stack.ctl("start", "chat:chat-2")
    stack.wait_ready()


def test_instance_down_fires_after_an_instance_is_killed(
        restored: Stack, prometheus: Prometheus) -> None:
    stack = restored
    victim = stack.instance_urls()[1].removeprefix("http://")
    prometheus.wait_for(f"{victim} up", lambda: up_by_target(prometheus).get(victim) == "1", WAIT)
    assert not [a for a in prometheus.alerts() if a["labels"]["alertname"] == "ChatInstanceDown"]

    pid = int(stack.ctl("pid", "chat:chat-2").strip())
    os.kill(pid, signal.SIGKILL)
    # supervisord would start it again within a second: keep it down, as a
    # crash-looping or forgotten instance is.
    stack.ctl("stop", "chat:chat-2")

    def firing() -> bool:
        return any(a["labels"]["alertname"] == "ChatInstanceDown"
                   and a["labels"]["instance"] == victim and a["state"] == "firing"
                   for a in prometheus.alerts())

    prometheus.wait_for(f"ChatInstanceDown firing for {victim}", firing, WAIT)
    others = [a["labels"]["instance"] for a in prometheus.alerts()
              if a["labels"]["alertname"] == "ChatInstanceDown"]
    assert others == [victim]
    status, well = report(stack.settings)  # `make status` sees it too
    assert not well
    assert re.search(r"^chat2 .* not answering .*DOWN", status, re.M), status
