"""`make reload`: the running stack's HAProxy re-reads haproxy.cfg and its certificate
(a renewed CHAT_TLS_CERT) without dropping a connection (README: HTTPS).

Run it with the environment `make run` was started with (at least CHAT_VAR).
"""

from __future__ import annotations

import sys

from stack.run import Stack
from stack.settings import StackSettings


def main() -> None:
    stack = Stack.running(StackSettings.from_env())
    try:
        stack.reload_haproxy()
    except RuntimeError as error:
        print(error, file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"HAProxy reloaded; open connections stay on the old worker until they close "
          f"(see {stack.settings.var}/log/haproxy.log)", flush=True)


if __name__ == "__main__":
    main()
