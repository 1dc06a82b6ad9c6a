"""Private rooms in the failover drill (issue 16): membership must hold through the chaos.

One drill client (the owner, client 0) creates the private rooms and invites
some of the others before the clock starts; members follow them like any
room (resuming with `after` on every reconnect) and write to them; some other
clients (outsiders) keep trying to get in: join, join with `after`, history
and chat, in turn, every PROBE_INTERVAL_SECONDS, each to be refused
`forbidden`. During the chaos the owner kicks one member (left as the faults
have it: usually online) and bans another one, kept offline across the ban.

Afterwards `check` proves two things from what every client wrote down:

(a) nobody read a private room it was not allowed to read then: an outsider
    got no frame of it at all (chat, presence, history), and a removed member
    nothing after its cutoff. The cutoff is, on a socket that got `kicked`,
    that frame; on a socket opened after the removal was answered
    (`moderated`, or the first `kicked` frame if that came earlier), the
    socket's start (its join must be refused); on a socket open across the
    removal that never got `kicked`, the answer plus KICK_GRACE_SECONDS (the
    protocol's "within 1 s"). What a removed member got before is its right.
    No outsider's chat is stored in a private room either.
(b) every member that stayed got every message of its private rooms exactly
    once, in order: bench.tally, with the window starting at the room's first
    message (members joined before it was written).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.drill_client import DrillClient, OrderKey, RoomEvent
from chatclient import ChatSocket, HttpSession

DEFAULT_PRIVATE_ROOMS = 2
# Roles go round in cycles of ten clients (slot = index % 10): slot k in
# 1..R is a member of private room k, slot R+1 (every other cycle) of all of
# them, slot R+2 an outsider. So at most 7 private rooms.
ROLE_CYCLE = 10
MAX_PRIVATE_ROOMS = ROLE_CYCLE - 3
# Each create and invite spends a turn of the owner's join bucket (bursts of
# 60, then one a second: pubsub/admission.py); the owner also joins its rooms.
MAX_INVITES = 48
# The owner kicks at this fraction of the sending time, and bans at the other.
KICK_AT = 0.35
BAN_AT = 0.65
# The banned member goes offline this long before the ban (the server has
# dropped its socket by then) and comes back once the ban is answered.
OFFLINE_LEAD_SECONDS = 1.0
OFFLINE_WAIT_SECONDS = 5.0
# docs/protocol.md: every socket of the user gets `kicked` within 1 s.
KICK_GRACE_SECONDS = 1.0
# How long the owner's order may take (it resends until answered).
ORDER_TIMEOUT_SECONDS = 60.0
ORDER_RESEND_SECONDS = 3.0
PROBE_INTERVAL_SECONDS = 2.0
MAX_PROBE_ROUNDS = 100_000
# Setup, before the clock: one frame's answer, and retries of a rate_limited one.
SETUP_TIMEOUT_SECONDS = 20.0
SETUP_TRIES = 5
SETUP_RETRY_SECONDS = 1.1
SAMPLES = 10

Log = Callable[[str], None]


# -- who is what ---------------------------------------------------------------


@dataclass
class PrivatePlan:
    rooms: list[str]
    owner: int  # client index; owns every private room
    members: dict[str, list[int]]  # room -> invited client indices (not the owner)
    outsiders: list[int]  # never members: they probe every private room
    kick: tuple[int, str] | None  # (client index, room): kicked as the chaos finds it
    ban: tuple[int, str] | None  # banned while kept offline

    def private_of(self, i: int) -> list[str]:
        return [r for r in self.rooms if i == self.owner or i in self.members[r]]

    def probe_of(self, i: int) -> list[str]:
        return list(self.rooms) if i in self.outsiders else []

    def removed(self) -> set[int]:
        return {t[0] for t in (self.kick, self.ban) if t is not None}


def plan_private(clients: int, rooms: Sequence[str]) -> PrivatePlan | None:
    """Roles for `clients` drill clients (index 0 owns every room); None without rooms."""
    if not rooms or clients < 1:
        return None
    if len(rooms) > MAX_PRIVATE_ROOMS:
        raise ValueError(f"at most {MAX_PRIVATE_ROOMS} private rooms")
    count = len(rooms)
    cap = MAX_INVITES // count
    members: dict[str, list[int]] = {r: [] for r in rooms}
    outsiders: list[int] = []
    for i in range(1, clients):
        slot = i % ROLE_CYCLE
        if 1 <= slot <= count:
            room = rooms[slot - 1]
            if len(members[room]) < cap:
                members[room].append(i)
        elif slot == count + 1 and (i // ROLE_CYCLE) % 2 == 0:
            if all(len(members[r]) < cap for r in rooms):
                for r in rooms:
                    members[r].append(i)
        elif slot == count + 2:
            outsiders.append(i)
    only = {r: [i for i in members[r] if sum(i in members[q] for q in rooms) == 1]
            for r in rooms}
    first, last = rooms[0], rooms[-1]
    kick = (only[first][-1], first) if only[first] else None
    banned = [i for i in only[last] if kick is None or i != kick[0]]
    ban = (banned[-1], last) if banned else None
    return PrivatePlan(list(rooms), 0, members, outsiders, kick, ban)


# -- before the clock ------------------------------------------------------------


async def setup(base_url: str, names: Sequence[str], plan: PrivatePlan, log: Log) -> None:
    """The owner (a login of its own) creates the rooms and invites the members."""
    http = HttpSession(base_url)
    try:
        response = await http.login(names[plan.owner])
        if response.code != 302:
            raise RuntimeError(f"private rooms: the owner's login answered {response.code}")
        sock = await ChatSocket.connect(http, timeout=SETUP_TIMEOUT_SECONDS)
        try:
            await sock.next_of("hello", timeout=SETUP_TIMEOUT_SECONDS)
            for room in plan.rooms:
                await _ask(sock, {"type": "create", "room": room, "private": True},
                           "presence", room=room)
            for room, invitees in plan.members.items():
                for i in invitees:
                    await _ask(sock, {"type": "invite", "room": room, "user": names[i]},
                               "moderated", room=room, user=names[i])
        finally:
            sock.close()
    finally:
        http.close()
    invited = sum(len(v) for v in plan.members.values())
    log(f"private rooms {', '.join(plan.rooms)} made by {names[plan.owner]}; {invited} "
        f"invitations; {len(plan.outsiders)} outsiders will try to get in")


async def _ask(sock: ChatSocket, frame: dict[str, Any], kind: str, **fields: str) -> None:
    """Send `frame` until answered with a `kind` frame with `fields` (or a final error)."""

    def answer(f: dict[str, Any]) -> bool:
        return f["type"] == "error" or (
            f["type"] == kind and all(f.get(k) == v for k, v in fields.items()))

    for _ in range(SETUP_TRIES):
        await sock.send(frame)
        got = await sock.next(answer, timeout=SETUP_TIMEOUT_SECONDS)
        if got["type"] != "error":
            return
        if got.get("code") != "rate_limited":
            raise RuntimeError(f"private rooms: {frame} answered {got}")
        await asyncio.sleep(SETUP_RETRY_SECONDS)
    raise RuntimeError(f"private rooms: {frame} stayed rate_limited")


# -- during the chaos --------------------------------------------------------------


@dataclass
class Removal:
    """One kick or ban the owner did during the chaos."""

    action: str
    room: str
    user: str
    at: float  # seconds into the drill the owner sent it
    offline: bool  # the member was kept offline across it
    answered_at: float | None = None  # seconds into the drill `moderated` came
    tries: int = 0  # frames the owner sent for it
    held_seconds: float = 0.0
    cutoff_at: float | None = None  # the member's end of the room (see the module doc)
    live_sockets: int = 0  # its sockets open across the cutoff
    kicked_sockets: int = 0  # its sockets that got `kicked`
    frames_before: int = 0  # chat messages of the room it got before the cutoff
    frames_after: int = 0  # ... after it (must be 0)
    stale_hellos: int = 0  # later hello frames that still list the room


async def _sleep_until(when: float) -> None:
    await asyncio.sleep(max(0.0, when - time.monotonic()))


async def _wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _offline(member: DrillClient) -> bool:
    return member.offline


def _answered(owner: DrillClient, key: OrderKey) -> bool:
    return key in owner.answered


async def script(users: Sequence[DrillClient], plan: PrivatePlan, t0: float, seconds: float,
                 log: Log, removals: list[Removal]) -> list[Removal]:
    """The owner kicks one member at KICK_AT and bans another (kept offline) at BAN_AT.
    Each is added to `removals` as it starts (a drill cut short still checks it)."""
    owner = users[plan.owner]
    steps = (("kick", plan.kick, KICK_AT, False), ("ban", plan.ban, BAN_AT, True))
    for action, target, fraction, offline in steps:
        if target is None:
            continue
        index, room = target
        member = users[index]
        when = t0 + seconds * fraction
        try:
            if offline:
                await _sleep_until(when - OFFLINE_LEAD_SECONDS)
                member.hold_off()
                await _wait_until(functools.partial(_offline, member), OFFLINE_WAIT_SECONDS)
            await _sleep_until(when)
            removal = Removal(action, room, member.user, time.monotonic() - t0, offline)
            removals.append(removal)
            log(f"{removal.at:6.1f} s  private: {action} {member.user} from {room}"
                f"{' (kept offline)' if offline else ''} ...")
            key = owner.order({"type": action, "room": room, "user": member.user})
            answered = await _wait_until(functools.partial(_answered, owner, key),
                                         ORDER_TIMEOUT_SECONDS)
            removal.tries = owner.order_tries[key]
            if answered:
                removal.answered_at = owner.answered[key] - t0
            else:
                owner.orders.pop(key, None)  # stop trying; the check reports it
            member.remove(room)
        finally:
            if offline:
                member.resume()
        removal.held_seconds = member.held_seconds
        outcome = (f"moderated after {removal.answered_at - removal.at:.1f} s "
                   f"({removal.tries} sent)"
                   if removal.answered_at is not None else "NEVER answered")
        log(f"{time.monotonic() - t0:6.1f} s  private: {action} {member.user}: {outcome}")
    return removals


async def probe_loop(users: Sequence[DrillClient], plan: PrivatePlan,
                     sending_over: asyncio.Event) -> None:
    """Until sending stops: every client that may not read a room tries it; the owner
    resends an unanswered order."""
    owner = users[plan.owner]
    for _ in range(MAX_PROBE_ROUNDS):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sending_over.wait(), PROBE_INTERVAL_SECONDS)
        if sending_over.is_set():
            return
        for user in users:
            user.probe()
        owner.resend_orders(ORDER_RESEND_SECONDS)


# -- afterwards --------------------------------------------------------------------


@dataclass
class PrivateResult:
    rooms: list[str]
    owner: str
    members: dict[str, int]  # room -> members that stayed (the owner included)
    outsiders: int
    removals: list[Removal] = field(default_factory=list)
    probes: int = 0  # tries to get into a room one may not read
    refused: int = 0  # `forbidden` answers the outsiders and removed members got
    admitted: int = 0  # presence or history of a room one may not read, or a probe acked
    outsider_frames: int = 0  # chat messages of a private room to a client never a member
    removed_before: int = 0  # chat messages removed members got before their cutoff
    removed_after: int = 0  # ... after it
    outsider_stored: int = 0  # messages in a private room's stream not from a member
    members_refused: int = 0  # `forbidden` answers to members that stayed
    hello_missing: int = 0  # members' hello frames without one of their rooms
    expected: int = 0  # bench.tally's numbers for the private rooms
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    samples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def leaks(self) -> int:
        return self.outsider_frames + self.removed_after + self.admitted + self.outsider_stored


def check(plan: PrivatePlan, users: Sequence[DrillClient], removals: Sequence[Removal],
          authors: dict[str, list[tuple[str, bool]]], t0: float
          ) -> tuple[PrivateResult, list[str]]:
    """(a) of the module doc, and the counts to show; `authors`: room -> (user, probe)
    of every stored message. (b) is bench.tally's; the caller copies its numbers."""
    names = [u.user for u in users]
    removed_at = {(names.index(r.user), r.room): r for r in removals}
    stayed = {room: ({plan.owner, *plan.members[room]}
                     - {i for (i, rm) in removed_at if rm == room}) for room in plan.rooms}
    ever = {room: {names[plan.owner], *(names[i] for i in plan.members[room])}
            for room in plan.rooms}
    result = PrivateResult(list(plan.rooms), names[plan.owner],
                           {room: len(stayed[room]) for room in plan.rooms}, len(plan.outsiders),
                           list(removals))

    def sample(kind: str, text: str) -> None:
        bucket = result.samples.setdefault(kind, [])
        if len(bucket) < SAMPLES:
            bucket.append(text)

    for i, user in enumerate(users):
        result.probes += user.probes_sent
        result.admitted += user.probes_acked
        if user.probes_acked:
            sample("probe acked", f"{user.user} x{user.probes_acked}")
        member_of = [room for room in plan.rooms if i in stayed[room]]
        removal_of = {room: r for (j, room), r in removed_at.items() if j == i}
        forbidden = user.errors.get("forbidden", 0)
        if removal_of or i in plan.outsiders:
            result.refused += forbidden  # its tries, and a join the removal cut
        elif member_of:
            result.members_refused += forbidden
            if forbidden:
                sample("member refused", f"{user.user} x{forbidden}")
        for sock in user.sockets if member_of else []:
            if any(room not in sock.rooms for room in member_of):
                result.hello_missing += 1
        cutoffs = {room: _cutoff(user, room, r, t0) for room, r in removal_of.items()}
        for event in user.events:
            room = event.room
            if room not in stayed or event.kind == "kicked" or i in stayed[room]:
                continue
            if room in cutoffs:
                bad = _after_cutoff(user, event, *cutoffs[room])
                removal = removal_of[room]
                if event.kind in ("chat", "history"):
                    if bad:
                        removal.frames_after += event.count
                    else:
                        removal.frames_before += event.count
            else:
                bad = True
                if event.kind in ("chat", "history"):
                    result.outsider_frames += event.count
            if bad:
                if event.kind in ("presence", "history"):
                    result.admitted += 1
                sample(f"{event.kind} after removal" if room in cutoffs
                       else f"{event.kind} to an outsider",
                       f"{user.user} in {room} at {event.at - t0:.1f} s (socket {event.sock})")
        for room, removal in removal_of.items():
            cut, kicked_seq = cutoffs[room]
            removal.cutoff_at = cut - t0 if cut != float("inf") else None
            live = [s for s in user.sockets
                    if s.hello_at <= cut and (s.closed_at is None or s.closed_at > cut)]
            removal.live_sockets = len(live)
            removal.kicked_sockets = len(kicked_seq)
            removal.stale_hellos = sum(1 for s in user.sockets
                                       if s.hello_at > cut and room in s.rooms)
    result.removed_before = sum(r.frames_before for r in removals)
    result.removed_after = sum(r.frames_after for r in removals)
    for room in plan.rooms:
        for author, probe in authors.get(room, []):
            if probe or author not in ever[room]:
                result.outsider_stored += 1
                sample("stored from an outsider", f"{author} in {room}")

    failures = []
    counts = {
        "private frames to outsiders": result.outsider_frames,
        "private frames after removal": result.removed_after,
        "outsiders admitted": result.admitted,
        "outsider messages stored": result.outsider_stored,
        "members refused": result.members_refused,
    }
    failures += [f"private: {name}: {n}" for name, n in counts.items() if n]
    failures += [f"private: {r.action} of {r.user} from {r.room} never answered"
                 for r in removals if r.answered_at is None]
    if result.probes and not result.refused:
        failures.append("private: no try of an outsider was ever refused")
    expected_removals = len([t for t in (plan.kick, plan.ban) if t is not None])
    if len(removals) < expected_removals:
        failures.append("private: the drill ended before its kick and ban")
    return result, failures


def _cutoff(user: DrillClient, room: str, removal: Removal, t0: float
            ) -> tuple[float, dict[int, int]]:
    """When `user` was out of `room` for sure (monotonic), and per socket the
    sequence number of the first `kicked` frame of the room it got."""
    answered = t0 + removal.answered_at if removal.answered_at is not None else float("inf")
    kicked: dict[int, int] = {}
    first_kicked = float("inf")
    for event in user.events:
        if event.kind == "kicked" and event.room == room and event.sock not in kicked:
            kicked[event.sock] = event.seq
            first_kicked = min(first_kicked, event.at)
    return min(answered, first_kicked), kicked


def _after_cutoff(user: DrillClient, event: RoomEvent, cut: float,
                  kicked: dict[int, int]) -> bool:
    if event.sock in kicked:
        return event.seq > kicked[event.sock]
    if 1 <= event.sock <= len(user.sockets) and user.sockets[event.sock - 1].hello_at > cut:
        return True  # a socket opened after the removal: its join must have been refused
    return event.at > cut + KICK_GRACE_SECONDS


def rows(result: PrivateResult) -> list[tuple[str, str]]:
    """The private rooms' lines of the drill's metric table."""
    return [
        ("private rooms", ", ".join(f"{room} ({n} members)"
                                    for room, n in result.members.items())),
        ("outsiders trying", str(result.outsiders)),
        ("tries / refused", f"{result.probes} / {result.refused}"),
        ("outsiders admitted", str(result.admitted)),
        ("private msgs to outsiders", str(result.outsider_frames)),
        ("outsider msgs stored", str(result.outsider_stored)),
        ("removed: msgs before / after", f"{result.removed_before} / {result.removed_after}"),
        ("private (got/expected)", f"{result.delivered} / {result.expected}"),
        ("private lost / dup / ooo",
         f"{result.lost} / {result.duplicated} / {result.out_of_order}"),
        ("members refused", str(result.members_refused)),
        ("members' hellos missing a room", str(result.hello_missing)),
        ("removed: hellos still listing it", str(sum(r.stale_hellos for r in result.removals))),
    ]


def removal_lines(result: PrivateResult) -> list[str]:
    lines = []
    for r in result.removals:
        answer = (f"moderated at {r.answered_at:.1f} s ({r.tries} sent)"
                  if r.answered_at is not None else "NEVER answered")
        where = (f"kept offline {r.held_seconds:.1f} s" if r.offline
                 else f"{r.kicked_sockets} of {r.live_sockets} live socket(s) got kicked")
        lines.append(f"  {r.at:6.1f} s  {r.action:<5} {r.user} from {r.room}: {answer}; {where}; "
                     f"msgs before/after {r.frames_before}/{r.frames_after}; "
                     f"later hellos listing it {r.stale_hellos}")
    return lines
