"""HTTPS at the front door (README: HTTPS): HAProxy terminates TLS with a certificate
made by `openssl` in this run (tests/conftest.py `https_stack`, rigs/certs.py).

Plain HTTP redirects (but /healthz), every HTTPS answer has HSTS, only modern TLS is
spoken, the cookies are `Secure` because the front door said HTTPS (and only then),
and a reload with a renewed certificate keeps an open WSS socket delivering while new
connections get the new certificate. Clients trust the test root alone, so every
handshake also proves the intermediate is served (the PEM layout the README gives).
Every wait is on a condition with a generous timeout.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable

import pytest
from tornado.httpclient import HTTPResponse

from chatclient import ChatSocket, HttpSession
from rigs.certs import TestPki
from stack.run import Stack
from stack.settings import PROJECT
from stack.tls import HSTS_MAX_AGE_SECONDS
from tests.browser_support import strong_password
from tests.conftest import unique

pytestmark = pytest.mark.cluster

# PROTOCOL.md: Operations.
MIN_HSTS_SECONDS = 180 * 24 * 3600
# A reload forks a new worker and hands it the listeners: well under a second here.
RELOAD_TIMEOUT = 30.0


def https_port(stack: Stack) -> int:
    assert stack.settings.tls is not None
    return stack.settings.tls.port


def cookie_attributes(answer: HTTPResponse) -> dict[str, set[str]]:
    """{cookie: the names of its attributes, lower case} for each Set-Cookie of `answer`."""
    found = {}
    for header in answer.headers.get_list("Set-Cookie"):
        name, *attributes = (part.strip() for part in header.split(";"))
        found[name.split("=", 1)[0]] = {a.split("=", 1)[0].lower() for a in attributes}
    return found


@pytest.fixture
async def sessions(https_stack: Stack, https_pki: TestPki) -> AsyncIterator[
        Callable[..., HttpSession]]:
    """Makes browsers: over HTTPS trusting the test root only (the default), or on any
    other URL; all closed at the end."""
    made: list[HttpSession] = []

    def make(url: str = "") -> HttpSession:
        made.append(HttpSession(url or https_stack.https_url, ca_certs=str(https_pki.root)))
        return made[-1]

    yield make
    for http in made:
        http.close()


async def signed_up(http: HttpSession, headers: dict[str, str] | None = None) -> HTTPResponse:
    """A new account through `http` (logged in); the signup's answer."""
    token = await http.xsrf()
    answer = await http.request("POST", "/signup", headers=headers, form={
        "user": unique("tls"), "password": strong_password(), "_xsrf": token})
    assert answer.code == 302, answer.code
    return answer


# -- plain HTTP ------------------------------------------------------------------------


async def test_plain_http_answers_301_to_the_same_path_over_https(
    https_stack: Stack, sessions: Callable[..., HttpSession]
) -> None:
    plain = sessions(https_stack.url)
    for method, path in (("GET", "/"), ("GET", "/static/chat.css?v=1&x=%20y"),
                         ("POST", "/login")):
        answer = await plain.request(method, path, form={} if method == "POST" else None)
        assert answer.code == 301, (method, path, answer.code)
        assert answer.headers["Location"] == f"{https_stack.https_url}{path}"
        # Nothing reached an instance: no cookie ever travels over plain HTTP.
        assert "Set-Cookie" not in answer.headers
        assert "Strict-Transport-Security" not in answer.headers
    # The port in Host is replaced, whatever name the client used.
    named = await plain.request("GET", "/x", headers={"Host": "chat.example.com:8000"})
    assert named.headers["Location"] == f"https://chat.example.com:{https_port(https_stack)}/x"


async def test_healthz_stays_plain_http(
    https_stack: Stack, sessions: Callable[..., HttpSession]
) -> None:
    answer = await sessions(https_stack.url).request("GET", "/healthz")
    assert answer.code == 200


async def test_metrics_is_served_on_neither_port(
    https_stack: Stack, sessions: Callable[..., HttpSession]
) -> None:
    for http in (sessions(https_stack.url), sessions()):
        for path in ("/metrics", "//Metrics"):
            assert (await http.request("GET", path)).code == 404, (http.base_url, path)


# -- HTTPS answers -----------------------------------------------------------------------


async def test_every_https_answer_carries_hsts(sessions: Callable[..., HttpSession]) -> None:
    https = sessions()
    answers = {
        "page": await https.request("GET", "/"),
        "static file": await https.request("GET", "/static/chat.css"),
        "instance's 404": await https.request("GET", "/nothing-here"),
        "HAProxy's 404": await https.request("GET", "/metrics"),
        "healthz": await https.request("GET", "/healthz"),
    }
    for what, answer in answers.items():
        hsts = answer.headers.get("Strict-Transport-Security", "")
        assert hsts == f"max-age={HSTS_MAX_AGE_SECONDS}", (what, answer.code, hsts)
    assert HSTS_MAX_AGE_SECONDS >= MIN_HSTS_SECONDS


async def test_cookies_are_secure_over_https(sessions: Callable[..., HttpSession]) -> None:
    https = sessions()
    page = cookie_attributes(await https.request("GET", "/"))
    assert "secure" in page["_xsrf"]
    assert {"secure", "httponly"} <= page["chatfleet_server"]  # HAProxy's stickiness
    login = cookie_attributes(await signed_up(https))
    assert {"secure", "httponly", "samesite"} <= login["jsessionid"]
    assert (await https.request("GET", "/session")).code == 200


async def test_a_client_saying_http_through_https_still_gets_secure_cookies(
    sessions: Callable[..., HttpSession]
) -> None:
    """HAProxy drops the client's X-Forwarded-Proto and says what the connection was."""
    https = sessions()
    lie = {"X-Forwarded-Proto": "http"}
    page = cookie_attributes(await https.request("GET", "/", headers=lie))
    assert "secure" in page["_xsrf"]
    assert "secure" in cookie_attributes(await signed_up(https, lie))["jsessionid"]


async def test_a_forged_scheme_sent_to_an_instance_gives_no_secure_cookie(
    https_stack: Stack, sessions: Callable[..., HttpSession]
) -> None:
    """An instance believes X-Forwarded-Proto only from the front door (its Unix socket
    here), never from a client that reaches its port."""
    assert https_stack.settings.unix_socket_dir, "this stack's instances trust loopback"
    direct = sessions(https_stack.instance_urls()[0])
    forged = {"X-Forwarded-Proto": "https"}
    page = cookie_attributes(await direct.request("GET", "/", headers=forged))
    assert "secure" not in page["_xsrf"]
    assert "secure" not in cookie_attributes(await signed_up(direct, forged))["jsessionid"]


# -- TLS itself ------------------------------------------------------------------------


def handshake(port: int, context: ssl.SSLContext) -> tuple[str | None, str | None, bytes]:
    """One TLS handshake with HAProxy: (version, ALPN protocol, the leaf's DER)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        leaf = tls.getpeercert(binary_form=True)
        assert leaf is not None
        return tls.version(), tls.selected_alpn_protocol(), leaf


def trusting(pki: TestPki) -> ssl.SSLContext:
    """A client context that trusts the test root and nothing else."""
    return ssl.create_default_context(cafile=str(pki.root))


def test_the_chain_is_served_and_http_1_1_is_the_only_alpn(
    https_stack: Stack, https_pki: TestPki
) -> None:
    context = trusting(https_pki)
    context.set_alpn_protocols(["h2", "http/1.1"])
    version, alpn, _ = handshake(https_port(https_stack), context)
    assert version == "TLSv1.3"
    assert alpn == "http/1.1"


def client_offering(version: ssl.TLSVersion, ciphers: str) -> ssl.SSLContext:
    """A client that offers only `version` and `ciphers` (old ones allowed on our side:
    the refusal must be HAProxy's) and checks nothing."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # TLS 1.1 is deprecated in Python: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    context.set_ciphers(ciphers + ":@SECLEVEL=0")
    return context


def test_only_tls_1_2_and_up_with_forward_secret_aead_suites(https_stack: Stack) -> None:
    port = https_port(https_stack)
    # TLS 1.2 with a modern suite: spoken.
    version, _, _ = handshake(port, client_offering(ssl.TLSVersion.TLSv1_2,
                                                    "ECDHE-ECDSA-AES128-GCM-SHA256"))
    assert version == "TLSv1.2"
    # TLS 1.1, or TLS 1.2 with a CBC suite: refused by HAProxy with an alert.
    for old, suite in ((ssl.TLSVersion.TLSv1_1, "ALL"),
                       (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA")):
        with pytest.raises(ssl.SSLError, match="ALERT"):
            handshake(port, client_offering(old, suite))


# -- reload with a renewed certificate -------------------------------------------------


async def wait_for(done: Callable[[], bool], what: str, timeout: float = RELOAD_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.1)


async def chatting(http: HttpSession, instance: int) -> ChatSocket:
    """A new account's WSS socket on chat instance `instance`, in the lobby."""
    http.cookies["chatfleet_server"] = f"chat{instance}"
    await signed_up(http)
    sock = await ChatSocket.connect(http)
    await sock.next_of("presence", room="lobby")
    return sock


async def test_a_reload_with_a_renewed_certificate_keeps_open_sockets(
    https_stack: Stack, https_pki: TestPki, sessions: Callable[..., HttpSession]
) -> None:
    """What the README says to do: write the new PEM over the old one (atomically),
    then `make reload`. A socket opened before keeps sending and receiving on the
    old worker; new connections get the new certificate; the old worker leaves once
    its last socket closed."""
    assert https_stack.settings.tls is not None
    port, cert = https_port(https_stack), https_stack.settings.tls.cert
    ann_http = sessions()
    ann = await chatting(ann_http, 1)
    before = handshake(port, trusting(https_pki))[2]
    assert len(https_stack.haproxy_pids()) == 2  # the master and one worker

    renewed = https_pki.issue(unique("renewed"))
    os.replace(renewed, cert)  # same path, so the rendered haproxy.cfg still names it
    reload = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stack.reload", cwd=PROJECT, env=https_stack.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    said = (await asyncio.wait_for(reload.communicate(), RELOAD_TIMEOUT))[0].decode()
    assert reload.returncode == 0, said
    await wait_for(lambda: handshake(port, trusting(https_pki))[2] != before,
                   "the new certificate was never served")
    assert handshake(port, trusting(https_pki))[2] == https_pki.leaf_der(renewed.stem)
    assert len(https_stack.haproxy_pids()) == 3  # the old worker holds ann's socket

    bob = await chatting(sessions(), 2)  # on the new worker, another instance
    for sender, receiver, name in ((bob, ann, "bob"), (ann, bob, "ann")):
        text = unique(f"after the reload from {name}")
        await sender.send({"type": "chat", "room": "lobby", "text": text, "cid": text})
        await sender.next_of("ack", cid=text)
        await receiver.next_of("chat", room="lobby", text=text)

    ann.close()
    await wait_for(lambda: len(https_stack.haproxy_pids()) == 2, "the old worker stayed")
    bob.close()
