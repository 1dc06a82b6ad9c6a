"""The histograms and the error and close counters move on a real instance's /metrics,
by exactly what one client did there."""

from __future__ import annotations

import asyncio
import time

from prometheus_client.parser import text_string_to_metric_families

from chatclient import ChatSocket, HttpSession
from stack.run import Stack
from tests.conftest import own_address, unique

WAIT = 20.0


async def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an instance's /metrics now."""
    http = HttpSession(base_url)
    try:
        page = (await http.request("GET", "/metrics")).body.decode()
    finally:
        http.close()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(page) for s in family.samples}


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


async def wait_for_count(base_url: str, sample: tuple[str, tuple[tuple[str, str], ...]],
                         at_least: float) -> None:
    deadline = time.monotonic() + WAIT
    while (await scrape(base_url)).get(sample, 0.0) < at_least:
        assert time.monotonic() < deadline, f"{sample} never reached {at_least}"
        await asyncio.sleep(0.1)


async def test_a_clients_joins_chats_refusals_and_closes_are_counted(stack: Stack) -> None:
    url = stack.instance_urls()[0]
    joined = key("chat_join_replay_seconds_count")
    published = key("chat_publish_seconds_count")
    fanned = key("chat_fanout_seconds_count")
    refused = key("chat_errors_sent_total", code="bad_frame")
    left = key("chat_socket_closes_total", code="1000", by="client")
    ended = key("chat_socket_closes_total", code="4401", by="server")
    before = await scrape(url)

    http = HttpSession(url)
    await http.login(unique("counted"))
    first = await ChatSocket.connect(http)
    await first.next_of("presence", room="lobby")
    text = unique("counted")
    await first.send({"type": "chat", "room": "lobby", "text": text, "cid": "m-1"})
    await first.next_of("ack", cid="m-1")
    await first.next_of("chat", room="lobby", text=text)  # fanned out here
    await first.send_raw("{not json")
    await first.next_of("error", code="bad_frame")
    after = await scrape(url)
    assert after[joined] >= before[joined] + 1
    assert after[published] >= before[published] + 1
    assert after[fanned] >= before[fanned] + 1
    assert after[refused] >= before[refused] + 1
    for name in ("chat_publish_seconds", "chat_join_replay_seconds", "chat_fanout_seconds"):
        assert after[key(name + "_bucket", le="+Inf")] == after[key(name + "_count")]

    first.conn.close(1000)  # the client closes first: by client, its code
    await wait_for_count(url, left, before[left] + 1)

    second = await ChatSocket.connect(http)
    await second.next_of("presence", room="lobby")
    await http.logout()  # the server ends the login's sockets with 4401
    assert await second.closed() == 4401
    await wait_for_count(url, ended, before[ended] + 1)
    http.close()


async def test_a_login_is_timed_whatever_its_answer(accounts_stack: Stack) -> None:
    url = accounts_stack.instance_urls()[0]
    logins = key("chat_login_seconds_count")
    before = (await scrape(url))[logins]
    name, password = unique("timed"), f"pw-{unique('t')}"
    http = HttpSession(url, source_address=own_address())
    try:
        assert (await http.signup(name, password)).code == 302
        assert (await http.login(name, password + "-not")).code == 401
        assert (await http.login(name, password)).code == 302
    finally:
        http.close()
    assert (await scrape(url))[logins] == before + 2  # signup is not a login
