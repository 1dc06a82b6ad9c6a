"""A chat process's life in one object (`ChatProcess`): configuration, Redis,
bus, sessions, the registry of open sockets, keep-alive, session watcher, drain."""

from runtime.process import ChatProcess, Config

__all__ = ["ChatProcess", "Config"]
