"""The real page in a real Chromium, through HAProxy: login, chat across instances, reload, XSS.

One headless Chromium (Debian's, never a downloaded one) serves every browser
test; every simulated user gets a fresh browser context, pinned to an
instance by HAProxy's `chatfleet_server` cookie where it matters. Every wait is
on a condition with a generous timeout, never a fixed sleep.

The browser tests share the lobby (the page has no room switcher), so they find
their messages by unique sender names and texts. The screenshot test is first
so that, run alone or first, it shows a lobby without other tests' messages.
"""

from __future__ import annotations

import re
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import (
    Page,
    expect,
)

from stack.run import Stack
from tests.browser_support import (
    NAME_ERROR,
    PHONE,
    SCREENSHOTS,
    OpenUser,
    browser,
    expect_instance,
    expect_online,
    expect_outbox_empty,
    log_in,
    messages,
    open_user,
    png_size,
    say,
    two_logged_in,
    wait_for_message,
)
from tests.conftest import unique

RACED_RELOADS = 10
# Mark the page, then reload it a moment later: the mark is gone once the new page is in.
RELOAD_SOON_JS = "() => { window.reloadPending = true; setTimeout(() => location.reload(), 50); }"

__all__ = ["browser", "open_user"]  # fixtures, imported for pytest to find

pytestmark = pytest.mark.browser

def test_screenshots(open_user: OpenUser, stack: Stack) -> None:
    """docs/screenshots: the chat page (1280x800) and the chat on a phone (the login
    page is taken in accounts mode, the default: tests/test_browser_accounts.py)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    ann_name, bob_name = unique("ann"), unique("bob")
    ann = open_user(1)
    bob = open_user(2)

    ann.goto("/")
    expect(ann.locator("#user")).to_be_focused()

    ann.locator("#user").fill(ann_name)
    ann.locator("#user").press("Enter")
    expect_online(ann, ann_name)
    log_in(bob, bob_name)
    lines = [
        (ann, ann_name, "Hi! Is the deploy done?"),
        (bob, bob_name, "Yes, all instances are up. Try reloading the page."),
        (ann, ann_name, "Reloaded, and the history is still here. Nice.\nThanks!"),
    ]
    for page, name, text in lines:
        say(page, text)
        wait_for_message(ann, name, text)
        wait_for_message(bob, name, text)
    expect_outbox_empty(ann)
    expect_outbox_empty(bob)
    # Both are online: the people list follows joins (see the people-list test).
    expect(bob.locator("#people li")).to_have_count(2)
    bob.locator("#text").blur()  # no focus ring in the picture
    bob.screenshot(path=SCREENSHOTS / "chat.png")

    bob.set_viewport_size(PHONE)
    expect(bob.locator("#people")).to_be_hidden()
    expect(bob.locator("#messages .msg").last).to_be_in_viewport()
    bob.screenshot(path=SCREENSHOTS / "chat-phone.png")

    assert png_size(SCREENSHOTS / "chat.png") == (1280, 800)
    assert png_size(SCREENSHOTS / "chat-phone.png") == (390, 844)


def test_login_shows_chat_page_online(open_user: OpenUser) -> None:
    name = unique("ann")
    page = open_user()
    response = page.goto("/")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator("body")).to_have_class("login-page")
    expect(page.locator("#messages")).to_have_count(0)

    page.locator("#user").press_sequentially(name)
    with page.expect_navigation():
        page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(r"/$"))
    expect_online(page, name)
    expect(page.locator("body")).to_have_attribute("data-user", name)
    expect(page.locator("#user")).to_have_count(0)
    session = page.request.get("/session")
    assert session.status == 200
    assert session.json()["user"] == name


def test_client_modules_load_once_by_versioned_url(open_user: OpenUser) -> None:
    """The chat page's ES modules (static/chat/) are each fetched once, all by a ?v= URL:
    an unversioned one could be an old cached copy beside a new main.js after a deploy."""
    scripts: list[str] = []
    errors: list[str] = []
    page = open_user()
    page.on("request", lambda r: scripts.append(r.url) if r.resource_type == "script" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, unique("ann"))
    paths = sorted(re.sub(r"^https?://[^/]+", "", url) for url in scripts)
    modules = ["connection", "input", "main", "render", "state"]
    assert [re.sub(r"\?v=[0-9a-f]+$", "", path) for path in paths] == [
        f"/static/chat/{name}.js" for name in modules
    ], paths
    assert all(re.search(r"\?v=[0-9a-f]+$", path) for path in paths), paths
    assert errors == []


def test_invalid_name_shows_reason_on_login_page(open_user: OpenUser) -> None:
    page = open_user()
    page.goto("/")
    bad = 'a <b id="bold">b</b>!'  # within the input's maxlength (32)
    page.locator("#user").fill(bad)
    # The input's own pattern already refuses it in the browser...
    assert page.locator("#user").evaluate("(input) => input.validity.valid") is False
    assert page.locator("#user").evaluate("(input) => input.validity.patternMismatch") is True

    # ...so skip the browser's check to see what the server answers.
    page.locator("form.login-form").evaluate("(form) => { form.noValidate = true; }")
    with page.expect_response(lambda r: r.url.endswith("/login")) as answer:
        page.locator("#user").press("Enter")
    assert answer.value.status == 400
    page.wait_for_load_state()

    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator("body")).to_have_class("login-page")
    expect(page.locator("#login-error")).to_have_text(NAME_ERROR)
    expect(page.locator("#login-error")).to_have_attribute("role", "alert")
    expect(page.locator("#user")).to_have_value(bad)  # kept for fixing, as text
    expect(page.locator("#bold")).to_have_count(0)
    expect(page.locator("#messages")).to_have_count(0)
    expect(page.locator("#status")).to_have_count(0)
    assert page.request.get("/session").status == 401

    # The same page still logs in once the name is fixed.
    name = unique("ann")
    page.locator("#user").fill(name)
    page.locator("#user").press("Enter")
    expect_online(page, name)


def test_two_instances_chat_both_ways(open_user: OpenUser, stack: Stack) -> None:
    ann, ann_name, bob, bob_name = two_logged_in(open_user)
    expect_instance(ann, stack, 1)
    expect_instance(bob, stack, 2)

    from_ann = f"hello from one {unique('t')}"
    say(ann, from_ann)
    wait_for_message(bob, ann_name, from_ann)
    wait_for_message(ann, ann_name, from_ann)
    expect_outbox_empty(ann)

    from_bob = f"hello from two {unique('t')}"
    say(bob, from_bob)
    wait_for_message(ann, bob_name, from_bob)
    wait_for_message(bob, bob_name, from_bob)
    expect_outbox_empty(bob)

    for page, me in ((ann, ann_name), (bob, bob_name)):
        ours = [m for m in messages(page) if m["user"] in (ann_name, bob_name)]
        assert ours == [
            {"user": ann_name, "text": from_ann, "mine": me == ann_name},
            {"user": bob_name, "text": from_bob, "mine": me == bob_name},
        ]
        # Everyone else's messages are never marked as ours.
        assert all(m["mine"] == (m["user"] == me) for m in messages(page))
    # Both still on the instance they were pinned to: this really crossed processes.
    expect_instance(ann, stack, 1)
    expect_instance(bob, stack, 2)


def test_reload_keeps_login_and_shows_history_once(open_user: OpenUser, stack: Stack) -> None:
    """The original app's Test 1: chat, reload, still logged in, the history is back once."""
    ann, ann_name, bob, bob_name = two_logged_in(open_user)

    sent = []
    for page, name, text in (
        (ann, ann_name, "first from ann"),
        (bob, bob_name, "first from bob"),
        (ann, ann_name, "second from ann"),
        (bob, bob_name, "second from bob"),
    ):
        text = f"{text} {unique('t')}"
        say(page, text)
        wait_for_message(ann, name, text)
        wait_for_message(bob, name, text)
        sent.append({"user": name, "text": text})
    expect_outbox_empty(ann)
    expect_outbox_empty(bob)

    def ours(page: Page) -> list[dict[str, Any]]:
        return [
            {"user": m["user"], "text": m["text"]}
            for m in messages(page)
            if m["user"] in (ann_name, bob_name)
        ]

    for _ in range(2):  # a second reload must not add anything either
        response = ann.reload()
        assert response is not None and response.status == 200
        expect_online(ann, ann_name)
        expect(ann.locator("#user")).to_have_count(0)
        expect_instance(ann, stack, 1)
        assert ours(ann) == sent
        assert all(m["mine"] == (m["user"] == ann_name) for m in messages(ann))

    # The reloaded page chats on, and nobody sees anything twice.
    after = f"after reload {unique('t')}"
    say(ann, after)
    wait_for_message(bob, ann_name, after)
    wait_for_message(ann, ann_name, after)
    expect_outbox_empty(ann)
    sent.append({"user": ann_name, "text": after})
    assert ours(ann) == sent
    assert ours(bob) == sent

    bob.reload()
    expect_online(bob, bob_name)
    expect_instance(bob, stack, 2)
    assert ours(bob) == sent


XSS_TEXTS = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=2</script>",
]


def test_message_text_is_never_html(open_user: OpenUser) -> None:
    """Texts that look like HTML show as text. CSP is bypassed so the page's own escaping
    is what is tested, not the Content-Security-Policy behind it."""
    ann_name, bob_name = unique("ann"), unique("bob")
    ann = open_user(1, bypass_csp=True)
    bob = open_user(2, bypass_csp=True)
    log_in(ann, ann_name)
    log_in(bob, bob_name)

    for text in XSS_TEXTS:
        say(ann, text)
        wait_for_message(bob, ann_name, text)
        wait_for_message(ann, ann_name, text)
    expect_outbox_empty(ann)

    for page in (ann, bob):
        from_ann = page.locator("#messages .msg").filter(
            has=page.locator(".user", has_text=re.compile(f"^{re.escape(ann_name)}$"))
        )
        expect(from_ann).to_have_count(2)
        expect(from_ann.last.locator(".text")).to_have_text(XSS_TEXTS[1])
        expect(from_ann.nth(0).locator(".text")).to_have_text(XSS_TEXTS[0])
        expect(page.locator("#messages img")).to_have_count(0)
        expect(page.locator("#messages script")).to_have_count(0)
        assert page.evaluate("() => typeof window.__pwned") == "undefined"
    # Bob's very last chat message is ann's script text, shown literally.
    expect(bob.locator("#messages .msg .text").last).to_have_text(XSS_TEXTS[1])


def test_logout_returns_to_login_and_ends_session(open_user: OpenUser) -> None:
    name = unique("ann")
    page = open_user(1)
    log_in(page, name)
    # A second tab of the same login: logout must end it too (close 4401).
    other_tab = page.context.new_page()
    other_tab.goto("/")
    expect_online(other_tab, name)
    assert page.request.get("/session").status == 200

    page.get_by_role("button", name="Log out").click()
    expect(page.locator("body")).to_have_class("login-page")
    expect(page.locator("#user")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("#me")).to_have_count(0)

    session = page.context.request.get("/session")
    assert session.status == 401
    assert session.json() == {"error": "not_logged_in"}

    expect(other_tab.locator("body")).to_have_class("login-page")
    expect(other_tab.locator("#user")).to_be_visible()
    # And a plain reload stays on the login page.
    page.reload()
    expect(page.locator("body")).to_have_class("login-page")


def session_cookie(page: Page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "jsessionid")


def test_tab_loaded_with_an_id_another_tab_just_replaced_returns_to_chat(
    open_user: OpenUser, stack: Stack,
) -> None:
    """Two tabs load the chat at once: one gives the session a new id while the
    other's request still carries the old one. That tab is shown the login page
    for a moment, asks /session with the browser's new cookie and is back."""
    name = unique("gil")
    page = open_user(1)
    log_in(page, name)
    old = session_cookie(page)
    # The other tab's load: a new id, the old one deleted, the browser keeps the new cookie.
    assert page.request.get("/session").status == 200
    assert session_cookie(page) != old
    # This tab's load went out just before with the old id: what the server
    # answers to that request is what this tab gets.
    request = urllib.request.Request(
        stack.url + "/", headers={"Cookie": f"chatfleet_server=chat1; jsessionid={old}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        raced = answer.read()
        raced_headers = {k: v for k, v in answer.headers.items() if k.lower() != "set-cookie"}
    assert b'action="/login"' in raced and b"login.js" in raced
    page.route("**/", lambda route: route.fulfill(
        status=200, headers=raced_headers, body=raced), times=1)

    page.goto("/")
    expect_online(page, name)
    expect(page.locator("body")).to_have_class("chat-page")


def test_two_tabs_reloading_together_both_stay_logged_in(open_user: OpenUser) -> None:
    """Every page load gives the shared cookie's session a new id and deletes the
    old one, so two tabs loading at once race; whichever loses must come back."""
    name = unique("ivy")
    first = open_user()
    log_in(first, name)
    second = first.context.new_page()
    second.goto("/")
    expect_online(second, name)
    for _ in range(RACED_RELOADS):
        for tab in (first, second):
            tab.evaluate(RELOAD_SOON_JS)
        for tab in (first, second):
            tab.wait_for_function("() => !window.reloadPending")  # the new page is in
            expect_online(tab, name)


def test_login_page_for_a_dead_session_stays_after_one_check(open_user: OpenUser) -> None:
    page = open_user(1)
    page.goto("/")
    expect(page.locator("script[src*='login.js']")).to_have_count(0)  # a stranger: no check
    log_in(page, unique("hal"))
    dead = session_cookie(page)
    assert page.request.get("/session").status == 200  # `dead` is replaced and deleted
    page.context.add_cookies([{**c, "value": dead} for c in page.context.cookies()
                              if c["name"] == "jsessionid"])

    page.goto("/")
    expect(page.locator("body")).to_have_attribute("data-recheck", "done")
    expect(page.locator("body")).to_have_class("login-page")
    expect(page.locator("#user")).to_be_visible()


def test_people_list_follows_joins_and_leaves(open_user: OpenUser) -> None:
    ann_name, bob_name = unique("ann"), unique("bob")
    ann = open_user(1)
    log_in(ann, ann_name)
    bob = open_user(2)
    log_in(bob, bob_name)
    expect(ann.locator("#messages .notice", has_text=f"{bob_name} joined")).to_have_count(1)
    bob_listed = ann.locator("#people li", has_text=re.compile(f"^{re.escape(bob_name)}$"))
    expect(bob_listed).to_have_count(1, timeout=5_000)

    bob.context.close()
    expect(ann.locator("#messages .notice", has_text=f"{bob_name} left")).to_have_count(1)
    expect(bob_listed).to_have_count(0, timeout=5_000)
