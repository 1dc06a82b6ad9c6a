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

    def stream(self, room: str) -> str:
        return f"{self.prefix}chat:{{{room}}}:stream"

    def dedupe(self, room: str, cid: str) -> str:
        return f"{self.prefix}chat:{{{room}}}:dedupe:{cid}"

    def channel(self, room: str) -> str:
        return f"{self.prefix}chat:{{{room}}}:live"

    def presence(self, room: str) -> str:
        return f"{self.prefix}chat:{{{room}}}:presence"

    def presence_of(self, room: str, user: str) -> str:
        return f"{self.prefix}chat:{{{room}}}:presence:{user}"

    def rate(self, user: str) -> str:
        """A user's chat rate bucket, shared by every room and instance.

        Not room-tagged on purpose: a flood spread over rooms must not help.
        """
        return f"{self.prefix}rate:{{{user}}}"

    def control_channel(self) -> str:
        """Cluster-wide orders to every instance (end a session's sockets)."""
        return f"{self.prefix}chat:control"

    def canary_channel(self, instance: str) -> str:
        """Each instance's own probe of its subscriber connection."""
        return f"{self.prefix}chat:canary:{instance}"
