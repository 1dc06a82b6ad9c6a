"""Accounts: a name belongs to whoever signed it up (docs/protocol.md: Accounts).

Beside sessions, not inside them: one Redis key per account, the login
throttle's counters in Redis (every instance sees them), and the password work
(Argon2id, the strength check) off the event loop in a bounded thread pool.
"""

from __future__ import annotations

from accounts.passwords import Busy, KdfParams, Passwords
from accounts.service import Accounts
from accounts.store import Account, AccountStore
from accounts.throttle import LoginThrottle, Throttled

AUTH_MODES = ("accounts", "open")

__all__ = ["AUTH_MODES", "Account", "AccountStore", "Accounts", "Busy", "KdfParams",
           "LoginThrottle", "Passwords", "Throttled"]
