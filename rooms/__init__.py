"""Rooms beyond the open lobby: private rooms, direct messages, roles and moderation.

`access` holds the one rule of who may read and write a room (run inside the
Redis scripts of join, history and publish); `moderation` the frames that
change it; `names` the names of direct-message rooms. Nothing is imported
here, so `pubsub` can use `rooms.access` without a cycle.
"""
