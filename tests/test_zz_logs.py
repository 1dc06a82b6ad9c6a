"""Last of all: after the whole suite, the instances' logs hold no session id or message text.

(Named to run last, when the logs hold everything the other tests did.)
"""

from __future__ import annotations

import base64

from chatclient import ChatSocket, HttpSession
from stack.run import Stack
from tests.conftest import unique


async def test_logs_never_hold_session_ids_or_message_text(stack: Stack) -> None:
    secret_text = unique("secret-words")
    http = HttpSession(stack.url)
    await http.login(unique("quiet"))
    sock = await ChatSocket.connect(http)
    await sock.next_of("presence", room="lobby")
    await sock.send({"type": "chat", "room": "lobby", "text": secret_text, "cid": "log-1"})
    await sock.next_of("ack", cid="log-1")
    await sock.send_raw('{"type":"chat","room":"lobby","text":' + '"' + secret_text + '"' + ",")
    await sock.next_of("error")  # a refused frame: its text must not be logged either
    raw_cookie = http.cookies["jsessionid"]
    # Tornado's signed value: "2|1:0|<len>:<time>|<len>:<name>|<len>:<base64 id>|<sig>"
    session_id = base64.b64decode(raw_cookie.split("|")[4].split(":", 1)[1]).decode()
    sock.close()
    http.close()

    files = (stack.settings.var / "log").glob("*.log")
    logs = "".join(path.read_text(errors="replace") for path in files)
    assert "GET /ws" in logs  # the access log is there at all
    assert secret_text not in logs
    assert raw_cookie not in logs
    assert session_id not in logs
