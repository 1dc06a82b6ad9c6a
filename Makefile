# chatfleet: `make run` starts the whole stack, `make test` runs every test.
# Both install what is missing first: Debian packages (apt-get, as root) and
# Python packages (into .venv).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

RUN_PACKAGES := python3=python3 python3-venv=python3-venv redis-server=redis-server haproxy=haproxy
# The multi-host and cluster tests: `ip netns` + veth (iproute2), `redis-cli --cluster create`;
# the HTTPS tests make throwaway certificates with `openssl`; the ops tests run a
# real Prometheus and promtool, and the Redis exporter (docs/ops/).
TEST_PACKAGES := $(RUN_PACKAGES) chromium=chromium ip=iproute2 redis-cli=redis-tools openssl=openssl \
	promtool=prometheus prometheus-redis-exporter=prometheus-redis-exporter

.PHONY: run test lint reload status backup restore failover bench scaling idle idle100k storm micro hostile logins node-peer smallrooms dms system-run system-test clean

run: system-run $(STAMP)
	$(PY) -m stack.run

test: system-test $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

# HAProxy re-reads haproxy.cfg and its certificate (CHAT_TLS_CERT renewed in place)
# without dropping a connection (README: HTTPS). Run with `make run`'s environment.
reload: $(STAMP)
	$(PY) -m stack.reload

# Each instance's readiness (/healthz), HAProxy's view of it and its sockets,
# and Redis's PING, without supervisorctl; exits 1 unless all is well.
status: $(STAMP)
	@$(PY) -m stack.status

# A consistent copy of the Redis data (an RDB snapshot) into $CHAT_BACKUP_DIR or
# var/backups/<UTC time>/, taken while the chat runs (README: Backups and restore).
backup: system-run $(STAMP)
	@stack/ensure-packages.sh redis-cli=redis-tools
	$(PY) -m stack.backup

# Bring a backup back into the stopped stack: make restore FROM=var/backups/<time>
# (FORCE=1: even though the chat runs; a live target is flushed first).
restore: system-run $(STAMP)
	@test -n "$(FROM)" || { echo "usage: make restore FROM=var/backups/<time> [FORCE=1]" >&2; exit 2; }
	$(PY) -m stack.restore $(if $(FORCE),--force) "$(FROM)"

# The default failover drill (issue: survive losing a process).
failover: system-run $(STAMP)
	$(PY) -m bench.failover

# Fan-out throughput, latency and CPU per delivery (issue: benchmarks).
bench: system-run $(STAMP)
	$(PY) -m bench.fanout --plot docs/bench/fanout.png

# Delivered msgs/s over 1 and 3 Redis shards x 2 and 6 chat processes (issue 7);
# 3 primaries or more are joined by `redis-cli --cluster create` (redis-tools).
scaling: system-run $(STAMP)
	@stack/ensure-packages.sh redis-cli=redis-tools
	$(PY) -m bench.scaling

# Memory and CPU of 10,000 idle logged-in WebSockets (issue: benchmarks).
idle: system-run $(STAMP)
	$(PY) -m bench.idle

# 100,000 idle logged-in WebSockets through HAProxy on one box, and a fan-out to
# a 1,000-member room among them (issue 18); on 2 cores the sockets alone take
# about 15 minutes to open.
idle100k: system-run $(STAMP)
	$(PY) -m bench.crowd

# 2,000 clients lose their instance to kill -9: resume times, loss (issue: benchmarks).
storm: system-run $(STAMP)
	$(PY) -m bench.storm

# Microseconds per step of one delivery (issue: benchmarks).
micro: system-run $(STAMP)
	$(PY) -m bench.micro

# The security review's attacks at bounded sizes: what each costs the server.
hostile: system-run $(STAMP)
	$(PY) -m bench.hostile

# Logins/s of one process, and its chat p99 idle vs under 50 logins/s (issue 15).
logins: system-run $(STAMP)
	$(PY) -m bench.logins

# The Node.js Socket.IO peer for the bench targets only (never `make run`):
# Debian's nodejs and npm, then `npm ci` into bench/peers/node-socketio/node_modules.
node-peer: system-run $(STAMP)
	$(PY) -m bench.peers.node_install

# 1,000 clients in 100 rooms of 10, every client publishing in turn (issue 18):
# chatfleet, the Node Socket.IO peer and python-socketio, rate stepped up.
smallrooms: node-peer
	$(PY) -m bench.smallrooms teams

# 1,000 clients in 500 rooms of 2 (direct messages), same servers and steps.
dms: node-peer
	$(PY) -m bench.smallrooms dms

system-run:
	@stack/ensure-packages.sh $(RUN_PACKAGES)

system-test:
	@stack/ensure-packages.sh $(TEST_PACKAGES)

$(PY):
	python3 -m venv $(VENV)

$(STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

clean:
	rm -rf var test-artifacts .pytest_cache .mypy_cache .ruff_cache
