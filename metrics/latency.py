"""Histograms of the waits an average hides (README: Operations): publish, fan-out,
join, login.

Declared here rather than beside their one `observe` each, so the hot modules
that take them (pubsub/bus.py, handlers/pages.py) change by a line or two.
Each is observed once per message, join or request, never per socket.
"""

from __future__ import annotations

from metrics import histogram

# A publish is one Lua round trip (~0.3 ms on a quiet Redis); the tail is a
# pool wait (up to 10 s, redisconn) or a Redis stalled by a fork or a slow disk.
PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)
# One message to one local socket costs ~10 µs, to 400 about 4 ms (README:
# Performance); past 100 ms a process is falling behind its rooms.
FANOUT_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# A join reads Redis a few times and replays up to 1,000 messages paced by the
# socket's own draining, which may wait up to 30 s for a slow reader.
JOIN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0)
# Argon2id costs ~33 ms of CPU; the rest is the password pool's queue (32 deep).
LOGIN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

PUBLISH_SECONDS = histogram(
    "chat_publish_seconds",
    "Publish round trip of a chat message: the Lua script (dedupe, XADD, PUBLISH) to its answer",
    PUBLISH_BUCKETS)
FANOUT_SECONDS = histogram(
    "chat_fanout_seconds",
    "One live message on this process: its frame built once and written to every local member",
    FANOUT_BUCKETS)
JOIN_REPLAY_SECONDS = histogram(
    "chat_join_replay_seconds",
    "A join from its start to its presence frame: subscribe, history replay, presence",
    JOIN_BUCKETS)
LOGIN_SECONDS = histogram(
    "chat_login_seconds",
    "POST /login in accounts mode, whatever the answer: throttle, Argon2id, new session",
    LOGIN_BUCKETS)
