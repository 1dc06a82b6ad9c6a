"""Per-socket and per-user limits of the WebSocket (README: Security)."""

from __future__ import annotations

from dataclasses import dataclass

from handlers.frames import MAX_TEXT_CHARS


@dataclass(frozen=True)
class SocketLimits:
    # docs/protocol.md: longer text gets `error too_large`, the socket stays open.
    max_text_chars: int = MAX_TEXT_CHARS
    # One socket following more rooms than a person can read is a scraper.
    max_rooms_per_socket: int = 20
    # Tabs of one login (one browser) on one instance; more is a script.
    max_sockets_per_login: int = 20
    # A login's rate refusals within pubsub.publish.STRIKE_WINDOW_SECONDS
    # (counted in Redis, so reconnecting does not reset them) before its
    # socket is closed (1008).
    abuse_strikes: int = 30
    # Queued-but-unsent bytes of a socket that stopped reading. Past this it
    # is cut off (it resumes from history when it comes back), so one stalled
    # reader never holds the process's memory or slows the others.
    slow_consumer_bytes: int = 512 * 1024
    # Frames of any kind one socket may send: a burst (a reconnect joins its
    # rooms and resends its outbox at once), then this many a second. Past it
    # the socket is closed (1008): every junk frame costs an `error` reply,
    # and nothing else bounds how many a script sends. 0: no bound.
    frames_per_second: float = 20.0
    frames_burst: int = 200


def take_token(tokens: float, elapsed: float, rate: float, burst: float) -> tuple[bool, float]:
    """One turn of a per-socket token bucket: refilled by `rate` a second over
    `elapsed` seconds, up to `burst`; (whether a token was there, what is left)."""
    tokens = min(burst, tokens + elapsed * rate)
    return (True, tokens - 1) if tokens >= 1 else (False, tokens)
