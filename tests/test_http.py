"""Pages, login, logout, /session, /healthz, /metrics and the /ws gate, on real instances."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketError

from chatclient import ChatSocket, HttpSession
from tests.conftest import unique


async def test_login_page_for_strangers(front: HttpSession) -> None:
    page = await front.request("GET", "/")
    assert page.code == 200
    assert b'action="/login"' in page.body
    assert "_xsrf" in front.cookies
    assert "jsessionid" not in front.cookies


async def test_login_sets_signed_httponly_lax_cookie(front: HttpSession) -> None:
    name = unique("ann")
    answer = await front.login(name)
    assert answer.code == 302
    assert answer.headers["Location"] == "/"
    cookie = next(c for c in answer.headers.get_list("Set-Cookie") if c.startswith("jsessionid="))
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/" in cookie
    value = front.cookies["jsessionid"]
    assert value.count("|") >= 4  # Tornado's signed-value format (version 2)
    me = await front.request("GET", "/session")
    assert me.code == 200
    assert json.loads(me.body)["user"] == name


@pytest.mark.parametrize("bad", ["", "a" * 33, "white space", "<script>", "ünï"])
async def test_bad_names_get_400_with_reason(front: HttpSession, bad: str) -> None:
    answer = await front.login(bad)
    assert answer.code == 400
    assert b"A user name is 1 to 32" in answer.body
    assert "jsessionid" not in front.cookies
    assert b"<script>" not in answer.body


async def test_login_without_xsrf_is_403(front: HttpSession) -> None:
    answer = await front.request("POST", "/login", form={"user": unique("ann")})
    assert answer.code == 403
    assert "jsessionid" not in front.cookies
    assert b"Traceback" not in answer.body


async def test_logout_without_xsrf_is_403_and_keeps_session(front: HttpSession) -> None:
    await front.login(unique("ann"))
    answer = await front.request("POST", "/logout", form={})
    assert answer.code == 403
    assert (await front.request("GET", "/session")).code == 200


async def test_session_probe(front: HttpSession) -> None:
    anonymous = await front.request("GET", "/session")
    assert anonymous.code == 401
    assert json.loads(anonymous.body) == {"error": "not_logged_in"}
    name = unique("bob")
    await front.login(name)
    first_cookie = front.cookies["jsessionid"]
    me = await front.request("GET", "/session")
    body = json.loads(me.body)
    assert body["user"] == name and body["instance"]
    assert front.cookies["jsessionid"] != first_cookie  # regenerated, still logged in
    assert json.loads((await front.request("GET", "/session")).body)["user"] == name


async def test_refresh_keeps_login_and_regenerates(front: HttpSession) -> None:
    """The original app's Test 1 over HTTP: GET / again, still logged in."""
    name = unique("cy")
    await front.login(name)
    before = front.cookies["jsessionid"]
    page = await front.request("GET", "/")
    assert page.code == 200
    assert name.encode() in page.body and b'id="composer"' in page.body
    after = front.cookies["jsessionid"]
    assert after != before
    stale = HttpSession(front.base_url)
    stale.cookies = {"jsessionid": before}
    assert (await stale.request("GET", "/session")).code == 401  # the old id is dead
    stale.close()


async def test_logout_destroys_session(front: HttpSession) -> None:
    await front.login(unique("dee"))
    kept = dict(front.cookies)
    answer = await front.logout()
    assert answer.code == 302
    assert (await front.request("GET", "/session")).code == 401
    replay = HttpSession(front.base_url)
    replay.cookies = kept  # the cookie from before logout must not work either
    assert (await replay.request("GET", "/session")).code == 401
    replay.close()


async def test_tampered_cookie_reads_as_logged_out(front: HttpSession) -> None:
    await front.login(unique("eve"))
    value = front.cookies["jsessionid"]
    front.cookies["jsessionid"] = value[:-3] + ("abc" if not value.endswith("abc") else "xyz")
    assert (await front.request("GET", "/session")).code == 401
    page = await front.request("GET", "/")
    assert page.code == 200 and b'action="/login"' in page.body


async def test_session_made_on_one_instance_works_on_every_other(
    instance_urls: list[str],
) -> None:
    one, two = HttpSession(instance_urls[0]), HttpSession(instance_urls[1])
    name = unique("fay")
    await one.login(name)
    two.cookies = dict(one.cookies)
    me = json.loads((await two.request("GET", "/session")).body)
    assert me["user"] == name
    assert me["instance"].endswith(instance_urls[1].rsplit(":", 1)[1])
    one.close()
    two.close()


async def test_healthz_and_metrics(direct: HttpSession) -> None:
    health = await direct.request("GET", "/healthz")
    assert health.code == 200 and health.body == b"ok\n"
    text = (await direct.request("GET", "/metrics")).body.decode()
    for name in ("chat_open_sockets", "chat_frames_in_total", "chat_frames_out_total",
                 "chat_publishes_total", "chat_redis_errors_total"):
        assert f"# TYPE {name} " in text


async def test_security_headers(front: HttpSession) -> None:
    page = await front.request("GET", "/")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"


async def test_ws_without_session_is_401(direct: HttpSession) -> None:
    with pytest.raises(HTTPClientError) as refused:
        await ChatSocket.connect(direct)
    assert refused.value.code == 401


async def test_ws_with_foreign_origin_is_403(direct: HttpSession) -> None:
    await direct.login(unique("gil"))
    with pytest.raises((HTTPClientError, WebSocketError)) as refused:
        await ChatSocket.connect(direct, origin="http://evil.example")
    assert getattr(refused.value, "code", None) == 403


async def test_ws_opens_with_hello_and_lobby(front: HttpSession) -> None:
    name = unique("hal")
    await front.login(name)
    sock = await ChatSocket.connect(front)
    hello = await sock.next()
    assert hello["type"] == "hello" and hello["user"] == name and hello["instance"]
    presence = await sock.next_of("presence", room="lobby")
    assert name in presence["users"]
    sock.close()
