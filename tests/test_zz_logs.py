"""Last of all: after the whole suite, the instances' logs hold no message text, password,
cookie or session id, and every line names its instance; the accounts stack's logs
(CHAT_LOG_FORMAT=json) are one JSON object per line.

(Named to run last, when the logs hold everything the other tests did: the
session's `stack` logs text, its `accounts_stack` JSON.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from chatclient import ChatSocket, HttpSession
from stack.run import Stack
from tests.conftest import own_address, unique
from tests.secrets_seen import SecretsSeen, session_id_of

# logs.TEXT_FORMAT: "<UTC time>Z LEVEL <host>:<port> <logger>: <message>".
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ (\S+:\d+) \S+: ")
JSON_FIELDS = ("ts", "level", "msg", "instance")


def chat_logs(stack: Stack) -> dict[str, str]:
    """{file name: text} of the stack's chat instances' logs."""
    return {path.name: path.read_text(errors="replace")
            for path in sorted((stack.settings.var / "log").glob("chat-*.log"))}


def instance_of(stack: Stack, log_name: str) -> str:
    """The instance id (host:port) chat-N.log's lines must carry."""
    n = int(Path(log_name).stem.split("-")[1])
    return f":{stack.settings.port_base + n}"


async def leave_traces(stack: Stack, password: str | None) -> tuple[str, str]:
    """A login, a chat and a refused frame on each instance, a failed login
    (accounts): (the secret text said, the last session cookie)."""
    secret_text = unique("secret-words")
    cookie = ""
    for n in range(1, stack.settings.instances + 1):
        http = HttpSession(stack.url)
        http.cookies["chatfleet_server"] = f"chat{n}"
        name = unique("quiet")
        if password is None:
            await http.login(name)
        else:
            assert (await http.signup(name, password)).code == 302
        sock = await ChatSocket.connect(http)
        await sock.next_of("presence", room="lobby")
        await sock.send({"type": "chat", "room": "lobby", "text": secret_text, "cid": "log-1"})
        await sock.next_of("ack", cid="log-1")
        await sock.send_raw('{"type":"chat","room":"lobby","text":"' + secret_text + '",')
        await sock.next_of("error")  # a refused frame: its text must not be logged either
        cookie = http.cookies["jsessionid"]
        sock.close()
        if password is not None:
            wrong = HttpSession(stack.url, source_address=own_address())
            wrong.cookies["chatfleet_server"] = f"chat{n}"
            assert (await wrong.login(name, password + "-wrong")).code == 401
            wrong.close()
        http.close()
    return secret_text, cookie


async def test_text_logs_never_hold_secrets_and_name_their_instance(
        stack: Stack, secrets_used: SecretsSeen) -> None:
    secret_text, cookie = await leave_traces(stack, None)
    session_id = session_id_of(cookie)
    assert session_id and session_id in secrets_used.session_ids

    logs = chat_logs(stack)
    everything = "".join(logs.values())
    assert "101 GET /ws" in everything  # the access log is there at all
    for text in (secret_text, cookie, session_id):
        assert text not in everything
    assert not secrets_used.found_in(everything)
    for name, text in logs.items():
        # A record's own further lines follow the line that names the instance:
        # a traceback (up to the next record), a warning's indented source line.
        in_traceback = False
        for line in text.splitlines():
            match = TEXT_LINE.match(line)
            if match:
                assert match.group(1).endswith(instance_of(stack, name)), line[:120]
                in_traceback = False
            elif line == "Traceback (most recent call last):":
                in_traceback = True
            else:
                assert in_traceback or line.startswith(" "), f"{name}: {line[:120]!r}"


async def test_json_logs_are_one_object_per_line_without_secrets(
        accounts_stack: Stack, secrets_used: SecretsSeen) -> None:
    password = f"pw-{unique('zz')}"
    secret_text, cookie = await leave_traces(accounts_stack, password)
    assert password in secrets_used.passwords

    logs = chat_logs(accounts_stack)
    everything = "".join(logs.values())
    for text in (secret_text, cookie, password, session_id_of(cookie) or cookie):
        assert text not in everything
    assert not secrets_used.found_in(everything)
    seen = set()
    for name, text in logs.items():
        for line in text.splitlines():
            record = json.loads(line)  # every line, whatever wrote it
            assert all(isinstance(record.get(key), str) for key in JSON_FIELDS), line
            assert record["instance"].endswith(instance_of(accounts_stack, name))
            seen.add(" ".join(record["msg"].split()[:3]))  # "401 POST /login"
            if record.get("logger") == "tornado.access":
                assert set(record) >= {"status", "method", "path", "ms"}
    assert "401 POST /login" in seen and "101 GET /ws" in seen
