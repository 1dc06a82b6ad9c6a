"""A small client of chatfleet's wire protocol (docs/protocol.md), for tests and bench tools.

It speaks to the server only as a browser would: HTTP with a cookie jar, the
login form with its XSRF token, and the JSON WebSocket. The product never
imports it.
"""

from chatclient.client import ChatSocket, HttpSession, SocketClosed

__all__ = ["ChatSocket", "HttpSession", "SocketClosed"]
