"""How every chatfleet process writes its log (README: Operations, Logs).

`text` (the default) is one human-readable line per event; `json`
(CHAT_LOG_FORMAT=json) is one JSON object per line with at least `ts`,
`level`, `msg`, `logger`, and `instance` in a chat process, for a collector
(Loki, Elasticsearch, journald) to read without parsing prose.

The product logs through the standard library (`logging.getLogger(__name__)`,
lazy %-arguments); structlog's ProcessorFormatter renders those same records
as JSON, so no call site changes with the format. Fields a caller passes in
`extra=` (the access log's status, method, path, ms) become JSON keys.

What a line may hold is the callers' rule (STYLE.md): never a message text,
password, cookie or session id; tests/test_zz_logs.py checks a whole test
session's logs for them.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")

# Text: UTC time to the millisecond, level, the instance (host:port), where from.
TEXT_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s {instance}%(name)s: %(message)s"
TEXT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
# A foreground program's own lines (`make run`: "chatfleet is up: ...") stay bare.
PLAIN_FORMAT = "%(message)s"


def configure(fmt: str, *, level: str = "info", instance: str = "", plain: bool = False,
              stream: TextIO | None = None) -> None:
    """Send every log record of this process to `stream` (stderr) in `fmt` ("text"
    or "json"), from `level` up, each line naming `instance` when given.

    `plain`: in text, the message alone (a terminal's foreground program).
    Replaces any handler configured before, so calling it again re-configures.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(json_formatter(instance) if fmt == "json"
                         else text_formatter(instance, plain))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Python's own warnings, a crash's traceback and an error it can only ignore
    # (in a __del__, say) are log lines too, in this format: a JSON reader must
    # not meet a bare traceback.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    sys.unraisablehook = _log_unraisable


def _log_uncaught(kind: type[BaseException], error: BaseException,
                  trace: TracebackType | None) -> None:
    logging.getLogger("chatfleet").critical("uncaught %s: the process stops", kind.__name__,
                                            exc_info=(kind, error, trace))


def text_formatter(instance: str = "", plain: bool = False) -> logging.Formatter:
    if plain:
        return logging.Formatter(PLAIN_FORMAT)
    named = instance.replace("%", "%%") + " " if instance else ""
    formatter = logging.Formatter(TEXT_FORMAT.format(instance=named), TEXT_TIME_FORMAT)
    formatter.converter = time.gmtime
    return formatter


def json_formatter(instance: str = "") -> logging.Formatter:
    """structlog's renderer for standard-library records: one JSON object per line."""
    pre_chain: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    if instance:
        pre_chain.append(_Instance(instance))
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,  # a traceback: one string field
            structlog.processors.EventRenamer("msg"),
            _contract_first,
            structlog.processors.JSONRenderer(),
        ],
    )


def _log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    # Where it happened by the code's name (Broken.__del__), never the object's
    # repr, which could hold anything.
    where = getattr(unraisable.object, "__qualname__", type(unraisable.object).__name__)
    logging.getLogger("chatfleet").error(
        "%s: %s", unraisable.err_msg or "Exception ignored in", where,
        exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
        if unraisable.exc_value is not None else None)


# The contract's fields lead each line, so a person reading it raw finds them.
LEADING_FIELDS = ("ts", "level", "instance", "logger", "msg")


def _contract_first(logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
    lead = {key: event.pop(key) for key in LEADING_FIELDS if key in event}
    return {**lead, **event}


class _Instance:
    """Puts the chat process's instance (host:port) on every line."""

    def __init__(self, instance: str) -> None:
        self.instance = instance

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
        event["instance"] = self.instance
        return event
