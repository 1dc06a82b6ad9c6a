"""A real Prometheus and Redis exporter on loopback, run by pid, for the ops tests.

`ops_config` turns docs/ops' scrape config and rules into a test's: the same
jobs, rules and expressions, pointed at a test stack's ports, scraped and
evaluated every second, with the `for:` of the alerts named shortened so an
alert fires within seconds instead of minutes. Nothing else is changed.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from stack.settings import PROJECT

OPS = PROJECT / "docs" / "ops"
HOST = "127.0.0.1"
# Scrape and evaluate every second: a test sees a change in two or three.
TEST_INTERVAL = "1s"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.2


def ops_config(folder: Path, targets: Mapping[str, Sequence[str]],
               short_for: Mapping[str, str]) -> Path:
    """docs/ops/prometheus.yml and alerts.yml, written into `folder` for a test:
    each job's targets replaced by `targets[job]` (a job not named is dropped),
    every interval TEST_INTERVAL, and `for:` of each alert in `short_for` set to
    its value there. The config's path."""
    config = yaml.safe_load((OPS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": TEST_INTERVAL, "scrape_timeout": TEST_INTERVAL,
                        "evaluation_interval": TEST_INTERVAL}
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            job["static_configs"] = [{"targets": list(targets[job["job_name"]])}]
            jobs.append(job)
    config["scrape_configs"] = jobs
    rules = yaml.safe_load((OPS / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in short_for:
                rule["for"] = short_for[rule["alert"]]
    (folder / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    config["rule_files"] = ["alerts.yml"]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (make test installs it)")
    return found


class _Process:
    """One server started by pid, its output in a log file, stopped by pid."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    def _start(self, command: list[str]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"{self.name}.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def _wait(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.folder}/{self.name}.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready; see {self.folder}/{self.name}.log")
            time.sleep(POLL_SECONDS)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class RedisExporter(_Process):
    """Debian's prometheus-redis-exporter (oliver006's redis_exporter) for one Redis."""

    def __init__(self, redis_url: str, port: int, folder: Path) -> None:
        super().__init__("redis-exporter", folder)
        self.redis_url = redis_url
        self.port = port

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        self._start([_binary("prometheus-redis-exporter"), f"-redis.addr={self.redis_url}",
                     f"-web.listen-address={self.target}"])
        self._wait(lambda: _answers(f"http://{self.target}/metrics"), timeout)


class Prometheus(_Process):
    """A Prometheus with its own storage folder, answering its HTTP API on `port`."""

    def __init__(self, config: Path, port: int, folder: Path) -> None:
        super().__init__("prometheus", folder)
        self.config = config
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        self._start([_binary("prometheus"), f"--config.file={self.config}",
                     f"--storage.tsdb.path={self.folder / 'data'}",
                     f"--web.listen-address={HOST}:{self.port}", "--log.level=warn"])
        self._wait(lambda: _answers(f"{self.url}/-/ready"), timeout)

    def api(self, path: str, **params: str) -> Any:
        """The `data` of one answer of the HTTP API (`/api/v1/...`); raises on an error."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as reply:
            answer = json.load(reply)
        if answer.get("status") != "success":
            raise RuntimeError(f"Prometheus {path}: {answer}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result: [{"metric": {...labels}, "value": [t, "v"]}, ...]."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert pending or firing now: [{"labels": {...}, "state": ...}, ...]."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        """Poll `check` until it holds; TimeoutError naming `what` after `timeout`."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Prometheus: {what} not within {timeout:.0f} s")
            time.sleep(POLL_SECONDS)
