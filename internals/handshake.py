"""Drop what only a WebSocket's handshake needed, once the socket is open.

Saves: idle sockets are most of a chat server's memory, and the handshake's
request and response headers, parsed cookies, query and template helpers
were about 20% of an idle socket's (18.7 -> 15.7 KB per socket with the
per-socket slots; README: Performance).

Depends on: `HTTPServerRequest.headers`/`arguments`/`query_arguments`/
`body_arguments`/`connection` and its cached `_cookies`, and on
`RequestHandler._headers` and `.ui` (Tornado 6.6). The headers are emptied in
place, not replaced: Tornado's `get()` coroutine, suspended for the socket's
whole life, still holds the request's header object.
"""

from __future__ import annotations

import tornado.websocket


def forget_handshake(handler: tornado.websocket.WebSocketHandler) -> None:
    request = handler.request
    # __init__ again rather than clear(), which keeps the tables' size.
    request.headers.__init__()  # type: ignore[misc]
    request.__dict__.pop("_cookies", None)
    request.arguments, request.query_arguments, request.body_arguments = {}, {}, {}
    request.connection = None  # the HTTP/1 connection, detached at the upgrade
    handler._headers.__init__()  # type: ignore[misc]  # the upgrade's response headers, long sent
    # Template helpers (closures per handler); WebSocketHandler._break_cycles
    # would keep them until the close.
    handler.ui = None  # type: ignore[assignment]
