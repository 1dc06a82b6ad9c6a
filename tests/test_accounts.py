"""Accounts through the real stack (docs/protocol.md: Accounts): two instances behind
HAProxy in accounts mode, signup, login, the throttle, password change.

Every test that fails logins connects from a loopback address of its own
(`own_address`), so the throttle's count for one address never spills over.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from tornado.httpclient import HTTPResponse

from accounts.store import AccountStore
from chatclient import ChatSocket, HttpSession
from redisconn import topology_of
from stack.run import Stack
from tests.conftest import lone_instance, own_address, unique

pytestmark = pytest.mark.cluster


def strong() -> str:
    return f"pw-{uuid.uuid4().hex}"


def instance_urls(stack: Stack) -> list[str]:
    return [f"http://127.0.0.1:{port}" for port in stack.settings.instance_ports()]


@pytest.fixture
async def browsers(accounts_stack: Stack) -> AsyncIterator[list[HttpSession]]:
    """Sessions made by `make` (closed at the end)."""
    made: list[HttpSession] = []
    yield made
    for http in made:
        http.close()


def new_browser(made: list[HttpSession], url: str, address: str | None = None) -> HttpSession:
    http = HttpSession(url, source_address=address)
    made.append(http)
    return http


async def signed_up(made: list[HttpSession], url: str, name: str, password: str) -> HttpSession:
    http = new_browser(made, url)
    answer = await http.signup(name, password)
    assert answer.code == 302, answer.body[:300]
    return http


async def whoami(http: HttpSession) -> str | None:
    answer = await http.request("GET", "/session")
    if answer.code != 200:
        return None
    user: str = __import__("json").loads(answer.body)["user"]
    return user


def reason(answer: HTTPResponse) -> str:
    """The error paragraph of a page."""
    found = re.search(rb'class="error" role="alert">([^<]*)<', answer.body)
    return found.group(1).decode() if found else ""


async def test_signup_logs_in_and_the_name_is_owned(accounts_stack: Stack,
                                                    browsers: list[HttpSession]) -> None:
    name, password = unique("ann"), strong()
    ann = await signed_up(browsers, accounts_stack.url, name, password)
    assert await whoami(ann) == name
    # Typing her name is no longer enough, in any case, on either instance.
    for url in (accounts_stack.url, *instance_urls(accounts_stack)):
        other = new_browser(browsers, url)
        assert (await other.signup(name, strong())).code == 409
        assert (await other.signup(name.upper(), strong())).code == 409
        assert (await other.login(name)).code == 401  # no password: a wrong one
        assert await whoami(other) is None


async def test_login_checks_the_password_and_regenerates_the_session(
    accounts_stack: Stack, browsers: list[HttpSession]
) -> None:
    name, password = unique("bob"), strong()
    await signed_up(browsers, accounts_stack.url, name, password)
    bob = new_browser(browsers, accounts_stack.url, own_address())
    assert (await bob.login(name, "not-" + password)).code == 401
    assert await whoami(bob) is None
    await bob.xsrf()
    before = bob.cookies.get("jsessionid")
    answer = await bob.login(name.upper(), password)  # names match in any case
    assert answer.code == 302 and answer.headers["Location"] == "/"
    assert bob.cookies.get("jsessionid") not in (None, before)
    assert await whoami(bob) == name  # as signed up


async def test_wrong_password_and_unknown_account_get_the_same_answer(
    accounts_stack: Stack, browsers: list[HttpSession]
) -> None:
    name = unique("cy")
    await signed_up(browsers, accounts_stack.url, name, strong())
    http = new_browser(browsers, accounts_stack.url, own_address())
    wrong = await http.login(name, strong())
    nobody = unique("cy")
    unknown = await http.login(nobody, strong())
    assert wrong.code == unknown.code == 401

    def page(answer: HTTPResponse, typed: str) -> bytes:
        # The XSRF field is masked afresh on every page (Tornado's token v2).
        body = re.sub(rb'name="_xsrf" value="[^"]*"', b"XSRF", answer.body)
        return body.replace(typed.encode(), b"NAME")

    assert page(wrong, name) == page(unknown, nobody)
    assert reason(wrong) == "That name and password do not match an account."


def kdf_runs(metrics_text: bytes) -> float:
    found = re.search(rb"^chat_password_kdf_total (\S+)$", metrics_text, re.M)
    assert found, "chat_password_kdf_total missing from /metrics"
    return float(found.group(1))


async def test_the_password_hash_runs_once_for_a_wrong_password_and_for_no_account(
    accounts_stack: Stack,
) -> None:
    """Counted, not timed: an unknown account is verified against a dummy hash."""
    with lone_instance(accounts_stack, "--auth=accounts") as url:
        http = HttpSession(url, source_address=own_address())
        try:
            name, password = unique("dee"), strong()
            assert (await http.signup(name, password)).code == 302
            await http.logout()

            async def runs_for(user: str) -> float:
                before = kdf_runs((await http.request("GET", "/metrics")).body)
                assert (await http.login(user, strong())).code == 401
                return kdf_runs((await http.request("GET", "/metrics")).body) - before

            assert await runs_for(name) == 1
            assert await runs_for(unique("nobody")) == 1
        finally:
            http.close()


async def test_refusals_name_the_rule_and_never_echo_the_password(
    accounts_stack: Stack, browsers: list[HttpSession]
) -> None:
    http = new_browser(browsers, accounts_stack.url)
    cases = {
        "password123": "well-known",
        "Tr0ub4dor": None,  # fine: not refused
        "short": "at least 8",
        "x" * 129: "at most 128",
    }
    for password, rule in cases.items():
        name = unique("eve")
        answer = await http.signup(name, password)
        if rule is None:
            assert answer.code == 302
            await http.logout()
            continue
        assert answer.code == 400, password
        assert rule in reason(answer)
        assert password.encode() not in answer.body
    for bad_name in ("", "a b", "x" * 33, "<script>"):
        answer = await http.signup(bad_name, strong())
        assert answer.code == 400 and "user name" in reason(answer)


async def test_racing_signups_on_two_instances_one_wins(
    accounts_stack: Stack, browsers: list[HttpSession]
) -> None:
    urls = instance_urls(accounts_stack)
    for _ in range(5):
        name = unique("race")
        one, two = new_browser(browsers, urls[0]), new_browser(browsers, urls[1])
        await asyncio.gather(one.xsrf(), two.xsrf())
        answers = await asyncio.gather(one.signup(name, strong()), two.signup(name, strong()))
        assert sorted(a.code for a in answers) == [302, 409]


async def test_throttle_counts_across_instances_and_refuses_even_the_right_password(
    accounts_stack: Stack, browsers: list[HttpSession]
) -> None:
    name, password = unique("fay"), strong()
    await signed_up(browsers, accounts_stack.url, name, password)
    address = own_address()
    urls = instance_urls(accounts_stack)
    guesses = [new_browser(browsers, urls[n % 2], address) for n in range(2)]
    for n in range(5):
        assert (await guesses[n % 2].login(name, strong())).code == 401
    for http in guesses:
        refused = await http.login(name, password)
        assert refused.code == 429
        assert 0 < int(refused.headers["Retry-After"]) <= 900
        assert "Too many tries" in reason(refused)
        assert await whoami(http) is None
    # Another address is not refused for this one's failures.
    elsewhere = new_browser(browsers, urls[0], own_address())
    assert (await elsewhere.login(name, password)).code == 302


async def test_racing_guesses_get_no_more_than_the_limit(
    accounts_stack: Stack, browsers: list[HttpSession]
) -> None:
    """Attempts are on record before the password is checked: 12 at once on two
    instances get 5 verdicts, the rest 429."""
    name = unique("gus")
    await signed_up(browsers, accounts_stack.url, name, strong())
    address = own_address()
    urls = instance_urls(accounts_stack)
    guessers = [new_browser(browsers, urls[n % 2], address) for n in range(12)]
    await asyncio.gather(*(g.xsrf() for g in guessers))
    answers = await asyncio.gather(*(g.login(name, strong()) for g in guessers))
    assert sorted(a.code for a in answers) == [401] * 5 + [429] * 7


@pytest.mark.parametrize("where", ["front door", "instance"])
async def test_a_forged_forwarded_for_is_throttled_all_the_same(
    accounts_stack: Stack, browsers: list[HttpSession], where: str
) -> None:
    name, password = unique("hal"), strong()
    await signed_up(browsers, accounts_stack.url, name, password)
    url = accounts_stack.url if where == "front door" else instance_urls(accounts_stack)[0]
    http = new_browser(browsers, url, own_address())
    codes = []
    for n in range(7):
        forged = {"X-Forwarded-For": f"198.51.100.{n + 1}", "X-Real-IP": f"203.0.113.{n + 1}"}
        form = {"user": name, "password": strong(), "_xsrf": await http.xsrf()}
        codes.append((await http.request("POST", "/login", form=form, headers=forged)).code)
    assert codes == [401] * 5 + [429] * 2


async def test_fifty_failures_from_one_address_over_all_names(
    accounts_stack: Stack, browsers: list[HttpSession]
) -> None:
    address = own_address()
    http = new_browser(browsers, accounts_stack.url, address)
    names = [unique("ivy") for _ in range(10)]
    codes = [(await http.login(names[n % 10], strong())).code for n in range(50)]
    assert codes == [401] * 50  # 5 per name: none over its own limit
    fresh = unique("ivy")
    refused = await http.login(fresh, strong())
    assert refused.code == 429 and int(refused.headers["Retry-After"]) > 0


async def test_password_change_ends_every_other_session_on_every_instance(
    accounts_stack: Stack, browsers: list[HttpSession]
) -> None:
    name, old, new = unique("jo"), strong(), strong()
    urls = instance_urls(accounts_stack)
    me = await signed_up(browsers, urls[0], name, old)
    others = [new_browser(browsers, url) for url in urls]
    for other in others:
        assert (await other.login(name, old)).code == 302
    sockets = [await ChatSocket.connect(http) for http in (me, *others)]
    try:
        for sock in sockets:
            await sock.next_of("hello")
        answer = await me.change_password(old, new)
        assert answer.code == 302
        for sock in sockets[1:]:
            assert await sock.closed(timeout=10) == 4401
        for other in others:
            assert await whoami(other) is None
        # This session stays, with a new id, and its socket keeps chatting.
        assert await whoami(me) == name
        await sockets[0].send({"type": "chat", "room": "lobby", "text": "still here",
                               "cid": "c1"})
        assert (await sockets[0].next_of("ack", cid="c1"))["id"]
    finally:
        for sock in sockets:
            sock.close()
    later = new_browser(browsers, accounts_stack.url, own_address())
    assert (await later.login(name, old)).code == 401
    assert (await later.login(name, new)).code == 302


async def test_password_change_refusals(accounts_stack: Stack,
                                        browsers: list[HttpSession]) -> None:
    name, password = unique("kai"), strong()
    me = new_browser(browsers, accounts_stack.url, own_address())
    assert (await me.signup(name, password)).code == 302
    wrong = await me.change_password("not-" + password, strong())
    assert wrong.code == 401 and "current password" in reason(wrong)
    weak = await me.change_password(password, "password1")
    assert weak.code == 400 and "well-known" in reason(weak)
    assert b"password1" not in weak.body
    assert await whoami(me) == name  # refusals leave the session alone
    stranger = new_browser(browsers, accounts_stack.url)
    await stranger.xsrf()
    assert (await stranger.change_password(password, strong())).code == 401


async def test_a_wrong_old_password_counts_as_a_failure(accounts_stack: Stack,
                                                        browsers: list[HttpSession]) -> None:
    name, password = unique("lu"), strong()
    me = new_browser(browsers, accounts_stack.url, own_address())
    assert (await me.signup(name, password)).code == 302
    for _ in range(5):
        assert (await me.change_password("not-" + password, strong())).code == 401
    refused = await me.change_password(password, strong())
    assert refused.code == 429 and "Retry-After" in refused.headers


@pytest.fixture
def redis(accounts_stack: Stack) -> Iterator[str]:
    yield accounts_stack.settings.effective_redis_url


async def test_an_old_hash_is_upgraded_at_the_next_login(accounts_stack: Stack, redis: str,
                                                         browsers: list[HttpSession]) -> None:
    from argon2 import PasswordHasher

    name, password = unique("max"), strong()
    client = Redis.from_url(redis)
    try:
        store = AccountStore(topology_of(client))
        weak_params = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
        assert await store.create(name, weak_params.hash(password))
        http = new_browser(browsers, accounts_stack.url)
        assert (await http.login(name, password)).code == 302
        account = await store.get(name)
        assert account is not None
        assert account.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        http2 = new_browser(browsers, accounts_stack.url)
        assert (await http2.login(name, password)).code == 302  # the new hash works
    finally:
        await client.aclose()


async def test_an_open_mode_session_is_logged_out_in_accounts_mode(
    accounts_stack: Stack, browsers: list[HttpSession]
) -> None:
    """A session made by the name-only login (before an upgrade) proves nothing."""
    with lone_instance(accounts_stack) as open_url:  # open mode, same Redis and secret
        http = new_browser(browsers, open_url)
        assert (await http.login(unique("ned"))).code == 302
        assert await whoami(http) is not None
        http.base_url = instance_urls(accounts_stack)[0]
        assert await whoami(http) is None
        with pytest.raises(Exception, match="401"):
            await ChatSocket.connect(http)


async def test_open_mode_has_no_signup_or_password(stack: Stack, front: HttpSession) -> None:
    await front.xsrf()
    assert (await front.signup(unique("oz"), strong())).code == 404
    assert (await front.change_password("a", "b")).code == 404
    assert (await front.request("GET", "/password")).code == 404
    assert (await front.request("POST", "/signup", form={})).code == 404  # no XSRF: still 404


async def test_signups_per_address_are_capped(accounts_stack: Stack) -> None:
    """Accounts never expire, so one address makes a bounded number an hour;
    a refused signup (name taken, weak password) does not count."""
    with lone_instance(accounts_stack, "--auth=accounts", "--signups-per-hour=2") as url:
        http = HttpSession(url, source_address=own_address())
        try:
            first = unique("pat")
            assert (await http.signup(first, strong())).code == 302
            assert (await http.signup(first, strong())).code == 409
            assert (await http.signup(unique("pat"), "password")).code == 400
            assert (await http.signup(unique("pat"), strong())).code == 302
            refused = await http.signup(unique("pat"), strong())
            assert refused.code == 429 and 0 < int(refused.headers["Retry-After"]) <= 3600
            assert "Too many tries" in reason(refused)
            elsewhere = HttpSession(url, source_address=own_address())
            try:
                assert (await elsewhere.signup(unique("pat"), strong())).code == 302
            finally:
                elsewhere.close()
        finally:
            http.close()


def test_no_password_or_hash_reaches_the_logs(accounts_stack: Stack) -> None:
    """Runs last in this module: every password above started with "pw-" (and
    "password123", "Tr0ub4dor", "password1" were typed); no log line holds one,
    nor an Argon2 hash."""
    logs = sorted((accounts_stack.settings.var / "log").glob("*.log"))
    seen = "".join(p.read_text(errors="replace") for p in logs if p.name.startswith("chat"))
    assert "401 POST /login" in seen and "409 POST /signup" in seen  # the logs saw them
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in ("pw-", "$argon2", "Tr0ub4dor", "password123"):
            assert secret not in text, f"{secret!r} in {path.name}"
