"""Publish, subscribe, fan out, history and presence: the chat's Redis side."""

from pubsub.admission import Allowance, Refused
from pubsub.bus import ChatBus
from pubsub.codec import StreamId, frame, parse_id
from pubsub.keys import Keys
from pubsub.publish import Published, RateLimit, RoomCaps

__all__ = ["Allowance", "ChatBus", "Keys", "Published", "RateLimit", "Refused", "RoomCaps",
           "StreamId", "frame", "parse_id"]
