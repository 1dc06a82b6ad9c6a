"""`logs`: the text and JSON formats of every process's log, and the secrets check
test_zz_logs.py relies on (that it would find a leak)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import logs
from tests.secrets_seen import SecretsSeen, session_id_of

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """logs.configure replaces the root handlers and the excepthook: put them back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hooks = sys.excepthook, sys.unraisablehook
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook, sys.unraisablehook = hooks
    logging.captureWarnings(False)


def lines_of(fmt: str, **options: str) -> list[str]:
    out = io.StringIO()
    logs.configure(fmt, stream=out, **options)  # type: ignore[arg-type]
    access = logging.getLogger("tornado.access")
    access.info("%d %s %s %.1fms", 200, "GET", "/session", 1.5,
                extra={"status": 200, "method": "GET", "path": "/session", "ms": 1.5})
    logging.getLogger("pubsub.subscriber").debug("not at info")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("handlers.base").error("error in %s %s", "GET", "/", exc_info=True)
    return out.getvalue().splitlines()


def test_json_is_one_object_per_line_with_the_contracts_fields(restore_logging: None) -> None:
    first, second = (json.loads(line) for line in lines_of("json", instance="vm:8001"))
    assert first["msg"] == "200 GET /session 1.5ms"
    assert first["level"] == "info" and first["logger"] == "tornado.access"
    assert first["instance"] == "vm:8001" and first["ts"].endswith("Z")
    assert (first["status"], first["method"], first["path"], first["ms"]) == (
        200, "GET", "/session", 1.5)
    assert second["level"] == "error" and second["msg"] == "error in GET /"
    assert "RuntimeError: boom" in second["exception"]  # the traceback, inside the one line


def test_text_names_time_level_and_instance_and_keeps_tracebacks(restore_logging: None) -> None:
    lines = lines_of("text", instance="vm:8001")
    assert lines[0].endswith("Z INFO vm:8001 tornado.access: 200 GET /session 1.5ms")
    assert " ERROR vm:8001 handlers.base: error in GET /" in lines[1]
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: boom"


class Broken:
    def __del__(self) -> None:
        raise RuntimeError("in __del__")


def test_a_crash_a_warning_or_an_ignored_error_is_one_json_line_too(
        restore_logging: None) -> None:
    out = io.StringIO()
    logs.configure("json", instance="vm:8001", stream=out)
    try:
        raise ValueError("crashed")
    except ValueError as error:
        sys.excepthook(ValueError, error, error.__traceback__)
    Broken()  # dropped at once: its __del__ raises where nothing can catch it
    warnings.warn("deprecated here", DeprecationWarning, stacklevel=1)
    crash, ignored, warned = (json.loads(line) for line in out.getvalue().splitlines())
    assert crash["level"] == "critical" and "ValueError: crashed" in crash["exception"]
    assert ignored["msg"].endswith("Broken.__del__") and "in __del__" in ignored["exception"]
    assert warned["logger"] == "py.warnings" and "deprecated here" in warned["msg"]
    assert {crash["instance"], ignored["instance"], warned["instance"]} == {"vm:8001"}


def test_the_stacks_own_lines_stay_bare_in_text(restore_logging: None) -> None:
    out = io.StringIO()
    logs.configure("text", plain=True, stream=out)
    logging.getLogger("chatfleet.stack").info("chatfleet is up: %s", "http://127.0.0.1:8000")
    assert out.getvalue() == "chatfleet is up: http://127.0.0.1:8000\n"


def test_an_unknown_format_or_level_is_refused(restore_logging: None) -> None:
    with pytest.raises(ValueError, match="text, json"):
        logs.configure("yaml")
    with pytest.raises(ValueError, match="level"):
        logs.configure("json", level="loud")


def test_a_chat_process_refuses_an_unknown_log_format() -> None:
    done = subprocess.run(
        [sys.executable, "chat_server.py", "--port=1"],
        cwd=PROJECT, env={"CHAT_COOKIE_SECRET": "s", "CHAT_LOG_FORMAT": "xml"},
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "log format must be one of text, json, not 'xml'" in done.stderr


def test_the_secrets_check_finds_a_leaked_session_id_cookie_or_password() -> None:
    seen = SecretsSeen(passwords={"pw-0123456789abcdef", "long pass phrase!"})
    cookie = ("2|1:0|10:1700000000|10:jsessionid|"
              "44:c2Vzc2lvbi1pZC1vZi10ZXN0LTEyMzQ1Njc4OTAxMg==|ab12cd")
    seen.note_cookie(cookie)
    assert session_id_of(cookie) == "session-id-of-test-123456789012"
    quiet = "INFO vm:8001 tornado.access: 302 POST /login 3.1ms"
    assert seen.found_in(quiet) == set()
    assert seen.found_in('{"msg": "session session-id-of-test-123456789012"}') == {
        "session-id-of-test-123456789012"}
    assert seen.found_in(f"Cookie: jsessionid={cookie}") >= {"ab12cd"}
    assert seen.found_in("form user=x&password=pw-0123456789abcdef") == {"pw-0123456789abcdef"}
    assert seen.found_in("said: long pass phrase!") == {"long pass phrase!"}
