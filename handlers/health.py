"""/healthz for HAProxy and /metrics for Prometheus."""

from __future__ import annotations

import tornado.web

import metrics
from pubsub import ChatBus


class HealthHandler(tornado.web.RequestHandler):
    """GET /healthz: 200 while this instance can serve (Redis reachable, not draining)."""

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        bus: ChatBus = self.settings["bus"]
        if self.settings["draining"].is_set():
            self.set_status(503)
            self.finish("draining\n")
            return
        trouble = await bus.trouble()
        if trouble is not None:
            self.set_status(503)
            self.finish(trouble + "\n")
            return
        self.finish("ok\n")


class MetricsHandler(tornado.web.RequestHandler):
    """GET /metrics: Prometheus text format."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(metrics.render())
