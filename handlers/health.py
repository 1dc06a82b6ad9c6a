"""/healthz for HAProxy and /metrics for Prometheus."""

from __future__ import annotations

from typing import TYPE_CHECKING

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST

import metrics

if TYPE_CHECKING:  # the process owns the handlers' app; imported for types only
    from runtime.process import ChatProcess


class HealthHandler(tornado.web.RequestHandler):
    """GET /healthz: 200 while this instance can serve (Redis reachable, not draining)."""

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        process: ChatProcess = self.settings["process"]
        if process.draining.is_set():
            self.set_status(503)
            self.finish("draining\n")
            return
        trouble = await process.bus.trouble()
        if trouble is not None:
            self.set_status(503)
            self.finish(trouble + "\n")
            return
        self.finish("ok\n")


class MetricsHandler(tornado.web.RequestHandler):
    """GET /metrics: this process's metrics, in prometheus_client's text exposition."""

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(metrics.render())
