"""Publish, subscribe, fan out, history and presence: the chat's Redis side."""

from pubsub.bus import ChatBus, Socket
from pubsub.codec import StreamId, frame, parse_id
from pubsub.keys import Keys
from pubsub.publish import Published, RateLimit

__all__ = ["ChatBus", "Keys", "Published", "RateLimit", "Socket", "StreamId", "frame", "parse_id"]
