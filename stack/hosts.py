"""The many-hosts deploy shape: a front door over chat hosts.

    # on each chat host (its own address; no Redis, no HAProxy here):
    CHAT_ADDRESS=10.0.0.2 CHAT_START_HAPROXY=false CHAT_INSTANCES=2 \\
    CHAT_COOKIE_SECRET=<shared> CHAT_REDIS_CLUSTER=10.0.0.9:7000,10.0.0.9:7001 make run

    # on the front door: render haproxy.cfg, or run HAProxy in the foreground
    python -m stack.hosts render-front --hosts 10.0.0.2:8001,10.0.0.2:8002,10.0.0.3:8001 \\
        --bind 0.0.0.0:80 --var /var/lib/chatfleet > /var/lib/chatfleet/haproxy.cfg
    python -m stack.hosts front --hosts ... --bind 0.0.0.0:80 --var /var/lib/chatfleet

Every host shares the cookie secret and the Redis (CHAT_REDIS_URL,
CHAT_REDIS_CLUSTER or CHAT_REDIS_SENTINELS). Instance ids are
hostname:port, so two hosts need different hostnames (or ports). Each chat
host sets CHAT_TRUSTED_PROXIES to the front door's address as the host sees
it, so its instances take the client address and scheme from the front door's
X-Forwarded-For / X-Forwarded-Proto (and from nobody else). The front door's
per-address limits come from CHAT_MAX_CONNS_PER_ADDRESS,
CHAT_MAX_NEW_CONNS_PER_ADDRESS and CHAT_MAX_LOGINS_PER_ADDRESS (0: off); with
CHAT_TLS_CERT it also serves HTTPS on CHAT_HTTPS_PORT of the --bind host (README: HTTPS).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from stack.front import FrontDoor, front_door_config, parse_hosts
from stack.settings import HAPROXY_METRICS_PORT, PROJECT, EdgeLimits
from stack.tls import FrontTls


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_front(door: FrontDoor) -> None:
    """Run HAProxy in the foreground until Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        door.start()
        assert door.process is not None
        door.wait_listening()  # hosts may come up later; HAProxy's checks find them
        print(f"chatfleet front door is up: {door.url}  ({len(door.servers)} servers; "
              "Ctrl-C stops)", flush=True)
        door.process.wait()
    except KeyboardInterrupt:
        print("\nstopping the front door…", flush=True)
    except (RuntimeError, TimeoutError) as error:
        print(f"front door failed to start: {error}", file=sys.stderr, flush=True)
        door.stop()
        sys.exit(1)
    finally:
        door.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stack.hosts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    port = os.environ.get("CHAT_HAPROXY_METRICS_PORT", "").strip() or str(HAPROXY_METRICS_PORT)
    metrics_bind = f"127.0.0.1:{port}" if port != "0" else ""
    for name, what in (("render-front", "print the front door's haproxy.cfg"),
                       ("front", "run the front door's HAProxy in the foreground")):
        sub = commands.add_parser(name, help=what)
        sub.add_argument("--hosts", required=True,
                         help="host:port of every chat process, comma-separated; "
                              "the order names them chat1, chat2, ... (keep it)")
        sub.add_argument("--bind", default="127.0.0.1:8000",
                         help="HAProxy's front address:port (default 127.0.0.1:8000)")
        sub.add_argument("--var", type=Path, default=PROJECT / "var" / "front",
                         help="state folder: stats socket, logs, the rendered config")
        sub.add_argument("--metrics-bind", default=metrics_bind,
                         help="address:port of HAProxy's own /metrics for Prometheus "
                              f"(default {metrics_bind}, from CHAT_HAPROXY_METRICS_PORT; "
                              "'' for none)")
    args = parser.parse_args(argv)
    servers = parse_hosts(args.hosts)
    var = args.var.resolve()
    limits, tls = EdgeLimits.from_env(), FrontTls.from_env()
    if args.command == "render-front":
        if tls is not None:
            tls.check()
        sys.stdout.write(front_door_config(args.bind, servers, var, limits, tls,
                                           args.metrics_bind))
    else:
        run_front(FrontDoor(args.bind, servers, var, limits, tls, args.metrics_bind))


if __name__ == "__main__":
    main()
