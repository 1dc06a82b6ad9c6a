"""Redis key and channel names.

Every key and channel of a room carries the room as a Redis Cluster hash tag
(`chat:{lobby}:stream`), so one room lives on one shard and its scripts stay
one round trip. The prefix keeps two deployments on one Redis apart; pub/sub
ignores database numbers, so the prefix is the only separation there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = ""
    # On a Redis Cluster, room channels are shard channels (SPUBLISH and
    # SSUBSCRIBE): a message goes only to the shard that owns the room.
    sharded: bool = False

    @property
    def publish_command(self) -> str:
        return "SPUBLISH" if self.sharded else "PUBLISH"

    def stream(self, room: str) -> str:
        return f"{self.prefix}chat:{{{room}}}:stream"

    def dedupe(self, room: str, user: str, cid: str) -> str:
        """A sent `cid` is the sender's own: another user's same cid is another message.
        (User names never hold ':', so user and cid cannot run together.)"""
        return f"{self.prefix}chat:{{{room}}}:dedupe:{user}:{cid}"

    def channel(self, room: str) -> str:
        return f"{self.prefix}chat:{{{room}}}:live"

    def presence(self, room: str) -> str:
        return f"{self.prefix}chat:{{{room}}}:presence"

    def presence_of(self, room: str, user: str) -> str:
        return f"{self.prefix}chat:{{{room}}}:presence:{user}"

    def rate(self, user: str, room: str) -> str:
        """A user's chat rate bucket, shared by every instance.

        One Redis: one bucket per user over all rooms, so a flood spread over
        rooms does not help. A Cluster: per user and room, in the room's
        slot, so publishing stays one script on one shard; a flood then gets
        at most `max_rooms_per_socket` times the rate, and the per-socket
        strikes still close an abuser's socket.
        """
        if self.sharded:
            return f"{self.prefix}chat:{{{room}}}:rate:{user}"
        return f"{self.prefix}rate:{{{user}}}"

    def strikes(self, login: str, room: str) -> str:
        """A login's recent rate refusals (1008 past a bound); slotted as `rate`."""
        if self.sharded:
            return f"{self.prefix}chat:{{{room}}}:strikes:{login}"
        return f"{self.prefix}strikes:{{{login}}}"

    def join_rate(self, user: str) -> str:
        """A user's bucket of joins and leaves, shared by every instance."""
        return f"{self.prefix}join-rate:{{{user}}}"

    def rooms_made(self, user: str) -> str:
        """How many rooms the user created today."""
        return f"{self.prefix}rooms-made:{{{user}}}"

    def room_meta(self, room: str) -> str:
        """The room's bookkeeping: `seq` (messages ever stored), `bytes` (stored now),
        and who may do what in it (rooms/access.py)."""
        return f"{self.prefix}chat:{{{room}}}:meta"

    def edits(self, room: str) -> str:
        """The latest text of each edited message of the room (id -> text)."""
        return f"{self.prefix}chat:{{{room}}}:edits"

    def audit(self, room: str) -> str:
        """The room's moderation trail (a capped stream): who did what to whom, when."""
        return f"{self.prefix}chat:{{{room}}}:audit"

    def user_rooms(self, user: str) -> str:
        """The private rooms and direct messages a user belongs to (hello.rooms)."""
        return f"{self.prefix}user-rooms:{{{user}}}"

    def control_channel(self) -> str:
        """Orders to every instance (end a session's sockets); a shard channel on a Cluster."""
        return f"{self.prefix}chat:control"

    def canary_channel(self, instance: str) -> str:
        """Each instance's own probe of its subscriber connection."""
        return f"{self.prefix}chat:canary:{instance}"
