"""What the chat sockets were told, by kind: each `error` code sent and each close code.

Every label value is one the server chose or a short list of the clients'
own, so a client cannot grow the page with made-up codes.
"""

from __future__ import annotations

import metrics

# docs/protocol.md's error codes, and the extensions (`unconfirmed`, `unknown_user`).
ERROR_CODES = ("bad_frame", "too_large", "rate_limited", "bad_room", "not_joined",
               "unavailable", "forbidden", "muted", "room_exists", "unconfirmed",
               "unknown_user")
# Close codes the server sends (docs/protocol.md; 1001: a peer that answered no
# ping; 1006, no close frame: a slow consumer cut off, its buffer full).
SERVER_CLOSE_CODES = ("1001", "1006", "1008", "1012", "4401")
# What a client's own close may say that is worth a series of its own (tab closed,
# page left); anything else it sends counts as "other". 1006 here: the connection
# ended without a close frame (network lost, or a frame over the size limit,
# which Tornado answers with 1009 and cuts without telling the handler).
CLIENT_CLOSE_CODES = ("1000", "1001", "1006")
NO_CLOSE_FRAME = 1006

ERRORS_SENT = metrics.labelled_counter(
    "chat_errors_sent_total", "error frames sent to clients, by code", ["code"],
    known=[(code,) for code in ERROR_CODES])
SOCKET_CLOSES = metrics.labelled_counter(
    "chat_socket_closes_total",
    "WebSockets closed, by close code and by who closed first (server or client)",
    ["code", "by"],
    known=[*((code, "server") for code in SERVER_CLOSE_CODES),
           *((code, "client") for code in CLIENT_CLOSE_CODES)])


def count_close(sent: int, received: int | None) -> None:
    """A socket ended: `sent` is the code this server closed it with (0 if it did not
    close first), `received` the code in the client's close frame, if one came."""
    if sent:
        SOCKET_CLOSES.labels(str(sent), "server").inc()
        return
    code = str(received if received is not None else NO_CLOSE_FRAME)
    SOCKET_CLOSES.labels(code if code in CLIENT_CLOSE_CODES else "other", "client").inc()
