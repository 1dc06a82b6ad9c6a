"""The chat bus of one process: publish, subscribe, fan out, history, presence.

Handlers talk to this and nothing else in `pubsub`; it never imports a handler.
Members are anything with `user` and `send_frame` (see `fanout.Member`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from time import perf_counter

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

import metrics
from metrics.latency import FANOUT_SECONDS, JOIN_REPLAY_SECONDS, PUBLISH_SECONDS
from pubsub.admission import Admission, Allowance, Refused
from pubsub.changes import Change, Changes
from pubsub.codec import ZERO_ID, StreamId, as_str, frame, pack, unpack
from pubsub.fanout import Cursor, Fanout, Member
from pubsub.history import Entry, Gap, History
from pubsub.keys import Keys
from pubsub.presence import PRESENCE_REFRESH_SECONDS, Presence
from pubsub.publish import Published, Publisher, RateLimit, RoomCaps
from pubsub.repair import Repairs
from pubsub.sharded import ShardedSubscriber
from pubsub.subscriber import REDIS_ERRORS, Subscriber
from redisconn import Topology

log = logging.getLogger(__name__)

PUBLISHES = metrics.counter("chat_publishes_total", "Chat messages stored and published")

# Rooms per presence-refresh batch: one batch's scripts run back to back in
# Redis, so a publish sent meanwhile waits behind at most this many.
PRESENCE_BATCH_ROOMS = 100
# A stop waits this long for each background task it cancels.
STOP_WAIT_SECONDS = 5.0
# A join with `after` replays at most this many messages; a longer gap gets
# `reset` (reason trimmed) and the recent messages, and the client pages back
# with `history` if it wants more.
REPLAY_MAX_MESSAGES = 1000
# Live payloads that are stream entries (a repair holds them in order).
STORED_KINDS = ("chat", "edit", "delete")


def resume_refusal(gap: Gap, epoch: str) -> str | None:
    """Why a join after an id cannot be served whole ("lost", "trimmed"), or None."""
    if (epoch and epoch != gap.epoch) or not gap.known:
        return "lost"
    if gap.trimmed or gap.count > REPLAY_MAX_MESSAGES:
        return "trimmed"
    return None


# How long a kick is remembered for joins that were under way when it came.
KICK_MEMORY_SECONDS = 30.0
# History goes out in chunks of about this many characters (at most 4 bytes
# each, so well under the slow-consumer bound); the next waits for the socket
# to take the last.
REPLAY_CHUNK_CHARS = 32 * 1024


class ChatBus:
    """Everything a process needs from Redis to chat, behind one small interface."""

    def __init__(
        self,
        topology: Topology,
        instance: str,
        keys: Keys | None = None,
        caps: RoomCaps | None = None,
        rate: RateLimit | None = None,
        wait_replicas: int = 0,
        allowance: Allowance | None = None,
        on_login_ended: Callable[[str], None] | None = None,
        on_room_order: Callable[[dict[str, object]], None] | None = None,
    ) -> None:
        """`keys.sharded` must match the topology's (shard channels on a Cluster).

        `on_login_ended(login)`: a login ended (logout, pushed out) on some
        instance; close its sockets here. `on_room_order(order)`: a kick, ban
        or invitation (rooms/moderation.py) for a user; tell its sockets here.
        """
        self.topology = topology
        redis = self.redis = topology.client
        self.keys = keys or Keys(sharded=topology.sharded)
        assert self.keys.sharded == topology.sharded, "Keys(sharded=) mismatch"
        self.instance = instance
        self.publisher = Publisher(topology, self.keys, caps, rate, wait_replicas)
        self.admission = Admission(redis, self.keys, allowance)
        self.history = History(redis, self.keys)
        self.presence = Presence(topology, self.keys, instance)
        self.fanout = Fanout()
        self.repairs = Repairs(self.history, self.fanout, REDIS_ERRORS.inc, self._unrepairable)
        self.changes = Changes(topology, self.keys, caps, rate)
        # Each room's epoch as last seen here (joins): a repair that finds
        # another one knows the room's history started over.
        self._epochs: dict[str, str] = {}
        self.on_login_ended = on_login_ended or (lambda login: None)
        self.on_room_order = on_room_order or (lambda order: None)
        # (room, user) -> when (loop time) a kick or ban for them was heard here:
        # a join that was under way then (its check passed before the kick)
        # is cut off all the same.
        self._kicked: dict[tuple[str, str], float] = {}
        # How many local sockets each (room, user) has: presence changes on 0 <-> 1.
        self._local: Counter[tuple[str, str]] = Counter()
        self._rooms_by_channel: dict[bytes, str] = {}
        self._control = self.keys.control_channel().encode()
        standing = (self.keys.control_channel(),)
        canary = self.keys.canary_channel(instance)

        def on_one_server(one: Redis) -> Subscriber | ShardedSubscriber:
            return Subscriber(one, canary, self._on_message, self._resubscribed,
                              standing=standing)

        def on_a_cluster(cluster: RedisCluster) -> Subscriber | ShardedSubscriber:
            return ShardedSubscriber(cluster, canary, self._on_message, self._resubscribed,
                                     standing=standing)

        self.subscriber = topology.choose(on_one_server, on_a_cluster)
        self._refresher: asyncio.Task[None] | None = None
        self._stopped = False

    async def trouble(self) -> str | None:
        """Why this process cannot serve chat right now, or None when it can."""
        try:
            await self.topology.ping()
        except (RedisError, OSError):
            return "redis unreachable"
        if not self.subscriber.connected:
            return "subscriber reconnecting"
        return None

    async def start(self) -> None:
        """Start the subscriber; it connects (and keeps reconnecting) in the background."""
        self.subscriber.start()
        self._refresher = asyncio.create_task(self._refresh_presence(), name="presence")

    async def stop(self, timeout: float = STOP_WAIT_SECONDS) -> None:
        """Stop the background work; all of it within `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._stopped = True  # ends the refresh loop even if its cancellation is lost
        if self._refresher is not None:
            self._refresher.cancel()
            _, stuck = await asyncio.wait({self._refresher}, timeout=timeout / 4)
            if stuck:
                log.error("presence refresh did not stop in time")
        await self.repairs.stop(timeout=max(0.0, (deadline - loop.time()) / 3))
        await self.subscriber.stop(timeout=max(0.0, deadline - loop.time()))

    # -- sockets ---------------------------------------------------------

    async def detach(self, member: Member) -> None:
        """The member's socket closed: leave its rooms, keeping its user present
        for a grace period (a reconnect announces nothing)."""
        for room in self.fanout.rooms_of(member):
            await self.leave(member, room, on_purpose=False)

    async def end_login(self, login_id: str) -> None:
        """Close every socket of this login on every instance."""
        await self.publish_control({"t": "end", "login": login_id})

    async def publish_control(self, order: dict[str, object]) -> None:
        """An order to every instance (this one included) on the control channel."""
        await self._publish_live(self._control.decode(), pack(order))

    def now(self) -> float:
        """The clock `join(since=)` and the kick memory use (the event loop's)."""
        return asyncio.get_running_loop().time()

    def kicked_since(self, room: str, user: str, since: float) -> bool:
        """Whether a kick or ban of `user` from `room` was heard at or after `since`."""
        return self._kicked.get((room, user), float("-inf")) >= since

    # -- rooms -----------------------------------------------------------

    async def join(self, member: Member, room: str, after: StreamId | None,
                   since: float | None = None, admin: bool = False, epoch: str = "") -> None:
        """Join `room`: history (all after `after`, or the recent part), then live.

        Joining a room the member is already in restarts it from `after`. A
        gap longer than REPLAY_MAX_MESSAGES is not replayed: `reset`
        (trimmed) first, then the recent messages, as for a plain join.
        History goes out paced by the member's own draining, so an honest
        reader always gets it whole and a member that stops reading, or goes,
        stops the replay (nothing more is read from Redis for it).

        `epoch`: the room's epoch the client had with `after`; another one now
        (or no record of the room at all) means its history was lost: `reset`
        (lost) first. Entries after `after` trimmed away: `reset` (trimmed).

        `since` (`now()` before the room's rule was asked): a kick or ban of
        the member's user heard after it ends the join with Refused(forbidden),
        even if it came while the history was being sent.
        """
        started = perf_counter()
        key = (room, member.user)
        since = self.now() if since is None else since
        first_of_user = False
        if not self.fanout.is_member(member, room):
            self._local[key] += 1
            first_of_user = self._local[key] == 1
        cursor = self.fanout.add(member, room)
        # A (re)join restarts the member's view of the room from `after`.
        cursor.last = after if after is not None else ZERO_ID
        channel = self.keys.channel(room)
        self._rooms_by_channel[channel.encode()] = room
        try:
            await self.subscriber.subscribe(channel)
            if after is not None:
                gap = await self.history.gap(room, after)
                reason = resume_refusal(gap, epoch)
                if reason is not None:
                    member.send_frame(frame("reset", room=room, reason=reason,
                                            epoch=gap.epoch))
                    # The recent messages follow as for a plain join, older
                    # ids than `after` included (the client dropped its copy).
                    after, cursor.last = None, ZERO_ID
            allowed = (lambda: not self.kicked_since(room, member.user, since)  # noqa: E731
                       and self.fanout.is_member(member, room))
            if after is None:
                sent = await self._send_paced(member, cursor, await self.history.recent(room),
                                              allowed)
            else:
                sent = await self._replay(member, room, cursor, allowed)
            while sent and cursor.overflowed:
                # Live messages came faster than the replay: read them from the stream.
                cursor.hold_live()
                sent = await self._replay(member, room, cursor, allowed)
            if self.kicked_since(room, member.user, since):
                await self._forget(member, room)
                raise Refused("forbidden", "you were removed from this room")
            if not sent:
                await self._forget(member, room)
                return
            self.fanout.finish_replay(member, cursor)
            if first_of_user:
                await self.presence.enter(room, member.user)
            users = await self.presence.members(room)
            epoch_now, owner, role = (
                as_str(v) if v is not None else None for v in await self.redis.hmget(
                    self.keys.room_meta(room), ["epoch", "owner", f"role:{member.user}"]))
        except BaseException:
            await self._forget(member, room)
            raise
        if epoch_now:
            self._epochs[room] = epoch_now
        # The room's epoch (a resume sends it back); (ext) its owner and the
        # joiner's own role, so a client offers only the actions it may take.
        mine = "admin" if admin else "owner" if owner == member.user else role or "member"
        JOIN_REPLAY_SECONDS.observe(perf_counter() - started)
        member.send_frame(frame("presence", room=room, users=users, epoch=epoch_now or "",
                                owner=owner, role=mine))

    def _unrepairable(self, room: str, gap: Gap) -> str | None:
        """Why a subscriber repair of `room` cannot fill its gap, or None."""
        seen = self._epochs.get(room, "")
        if seen and (not gap.known or gap.epoch != seen):
            self._epochs[room] = gap.epoch
            return "lost"
        return "trimmed" if gap.trimmed else None

    async def change(self, kind: str, room: str, user: str, target: str, text: str = "",
                     admin: bool = False) -> Change:
        """An edit or delete of a stored message (pubsub/changes.py)."""
        return await self.changes.apply(kind, room, user, target, text, admin)

    async def _replay(self, member: Member, room: str, cursor: Cursor,
                      allowed: Callable[[], bool]) -> bool:
        """Everything stored after the cursor, a page at a time; False if the member went."""
        async for page in self.history.after(room, cursor.last):
            if not await self._send_paced(member, cursor, page, allowed):
                return False
        return True

    @staticmethod
    async def _send_paced(member: Member, cursor: Cursor, entries: list[Entry],
                          allowed: Callable[[], bool]) -> bool:
        """Send `entries` past the cursor, waiting for the member to take each
        REPLAY_CHUNK_CHARS; False if it went, stopped reading, or may no longer
        read the room (`allowed`, asked before every message)."""
        queued = 0
        for entry in entries:
            if not allowed():
                return False
            if entry.key <= cursor.last:
                continue
            cursor.last = entry.key
            member.send_frame(entry.frame)
            queued += len(entry.frame)
            if queued >= REPLAY_CHUNK_CHARS:
                if not await member.drain():
                    return False
                queued = 0
        return await member.drain() if queued else True

    async def leave(self, member: Member, room: str, *, on_purpose: bool = True) -> None:
        if not self.fanout.is_member(member, room):
            return
        last_of_user = await self._forget(member, room)
        if last_of_user:
            try:
                await self.presence.exit(room, member.user, on_purpose=on_purpose)
            except (RedisError, OSError):
                REDIS_ERRORS.inc()  # the entry lapses by itself within the presence TTL

    def cut_off(self, member: Member, room: str) -> asyncio.Task[None] | None:
        """Remove the member from the room at once (no frame of it reaches the
        member after this call), then leave in the background: a kick."""
        if not self.fanout.is_member(member, room):
            return None
        last_here, last_of_user = self._drop(member, room)

        async def finish() -> None:
            if last_here:
                await self._unsubscribe(room)
            if last_of_user:
                try:
                    await self.presence.exit(room, member.user, on_purpose=True)
                except (RedisError, OSError):
                    REDIS_ERRORS.inc()

        return asyncio.create_task(finish())

    async def _forget(self, member: Member, room: str) -> bool:
        """Drop local membership; True if it was the user's last local socket in the room."""
        if not self.fanout.is_member(member, room):
            return False
        last_here, last_of_user = self._drop(member, room)
        if last_here:
            await self._unsubscribe(room)
        return last_of_user

    def _drop(self, member: Member, room: str) -> tuple[bool, bool]:
        """The synchronous part of leaving: (last socket here, last of its user here)."""
        last_here = self.fanout.remove(member, room)
        key = (room, member.user)
        self._local[key] -= 1
        last_of_user = self._local[key] <= 0
        if last_of_user:
            del self._local[key]
        return last_here, last_of_user

    async def _unsubscribe(self, room: str) -> None:
        channel = self.keys.channel(room)
        self._rooms_by_channel.pop(channel.encode(), None)
        await self.subscriber.unsubscribe(channel)

    def is_member(self, member: Member, room: str) -> bool:
        return self.fanout.is_member(member, room)

    def rooms_of(self, member: Member) -> list[str]:
        """The rooms `member` is in on this process."""
        return self.fanout.rooms_of(member)

    async def history_page(
        self, room: str, before: StreamId | None, limit: int
    ) -> tuple[list[Entry], bool]:
        """Up to `limit` messages older than `before` (or the newest), oldest
        first, and whether older ones remain."""
        return await self.history.before(room, before, limit)

    async def admit_join(self, user: str, room: str, admin: bool = False) -> None:
        """Count a join against the user's shared allowance and ask the room's rule;
        admission.Refused past the one or against the other."""
        await self.admission.enter(user, room, admin)

    async def admit_leave(self, user: str) -> None:
        await self.admission.take_turn(user)

    async def publish(
        self, room: str, user: str, text: str, cid: str = "", login: str = "",
        admin: bool = False,
    ) -> Published:
        started = perf_counter()
        published = await self.publisher.publish(room, user, text, cid, login, admin)
        PUBLISH_SECONDS.observe(perf_counter() - started)
        if published.id and not published.duplicate:
            PUBLISHES.inc()
        return published

    async def publish_typing(self, room: str, user: str) -> None:
        """Tell the room `user` is typing: live only, never stored."""
        payload = pack({"t": "typing", "room": room, "user": user})
        await self._publish_live(self.keys.channel(room), payload)

    async def _publish_live(self, channel: str, payload: bytes) -> None:
        await self.topology.publish(channel, payload)

    # -- subscriber callbacks ---------------------------------------------

    def _on_message(self, channel: bytes, data: bytes) -> None:
        try:
            payload = unpack(data)
        except ValueError:
            log.warning("undecodable payload on a subscribed channel")
            return
        if channel == self._control:
            self._on_control(payload)
            return
        room = self._rooms_by_channel.get(channel)
        if room is None:
            return
        if payload.get("t") in STORED_KINDS and self.repairs.hold(room, payload):
            return
        started = perf_counter()
        self.fanout.deliver(room, payload)
        FANOUT_SECONDS.observe(perf_counter() - started)

    def _on_control(self, payload: dict[str, object]) -> None:
        kind = payload.get("t")
        login = payload.get("login")
        if kind == "end" and isinstance(login, str):
            self.on_login_ended(login)
        elif kind in ("kick", "invited"):
            room, user = payload.get("room"), payload.get("user")
            if not (isinstance(room, str) and isinstance(user, str)):
                return
            if kind == "kick":
                now = self.now()
                self._kicked = {k: t for k, t in self._kicked.items()
                                if now - t < KICK_MEMORY_SECONDS}
                self._kicked[(room, user)] = now
            self.on_room_order(payload)

    def _resubscribed(self, channel: bytes) -> None:
        room = self._rooms_by_channel.get(channel)
        if room is not None:
            self.repairs.start(room)

    async def _refresh_presence(self) -> None:
        while not self._stopped:
            await asyncio.sleep(PRESENCE_REFRESH_SECONDS)
            by_room: dict[str, list[str]] = {}
            for room, user in self._local:
                by_room.setdefault(room, []).append(user)
            rooms = list(by_room)
            for start in range(0, len(rooms), PRESENCE_BATCH_ROOMS):
                # Who is here now, not when the list was made: one who left while
                # earlier batches were refreshed must not be put back (and
                # announced `joined`).
                batch = {room: users for room in rooms[start:start + PRESENCE_BATCH_ROOMS]
                         if (users := [user for user in by_room[room]
                                       if self._local[(room, user)] > 0])}
                if not batch:
                    continue
                try:
                    await self.presence.refresh_many(batch)
                except (RedisError, OSError):
                    REDIS_ERRORS.inc()
