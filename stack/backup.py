"""`make backup`: a consistent copy of the stack's Redis, taken while the chat runs.

    python -m stack.backup                       # the stack's Redis (or CHAT_REDIS_URL)
    python -m stack.backup --to /srv/backups     # somewhere else than var/backups
    python -m stack.backup --redis-url redis://10.0.0.5:6379/0   # one node by hand

Why an RDB streamed by `redis-cli --rdb` rather than a copy of the AOF: Redis
forks and serialises one instant of the whole dataset (every chat write is one
Lua script, so no half-written message or account is in it), it comes over the
network, so it works as well against an outside Redis whose disk we cannot
read, and it is one self-checking file. Copying the stack's multi-part AOF
would need AOF rewrites paused meanwhile and local disk access.

Each backup is a folder named by its UTC time, holding `dump.rdb` and
`manifest.json` (time, source, Redis version, key count, size, SHA-256). It is
made under a `.partial` name and renamed when whole, so a folder without that
suffix is a finished backup.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import redis

from stack.rdb import BackupError, check_rdb, public_url, sha256, stream_rdb
from stack.settings import StackSettings

MANIFEST = "manifest.json"
RDB_FILE = "dump.rdb"
FORMAT = "chatfleet-backup/1"
PARTIAL = ".partial"
INFO_TIMEOUT_SECONDS = 10.0


@dataclass
class Manifest:
    created: str  # UTC, ISO 8601
    source: str  # the Redis URL, without a password
    redis_version: str
    keys: int  # in the RDB, every database (redis-check-rdb's count)
    expires: int  # of those, keys with an expiry
    bytes: int
    sha256: str
    keys_live: dict[str, int] = field(default_factory=dict)  # INFO keyspace just before
    file: str = RDB_FILE
    format: str = FORMAT

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT:
                raise BackupError(f"{path}: not a chatfleet backup ({data.get('format')!r})")
            return cls(**data)
        except (OSError, ValueError, TypeError) as error:
            raise BackupError(f"{path}: unreadable manifest ({error})") from error


def backup_root(settings: StackSettings) -> Path:
    """CHAT_BACKUP_DIR, else var/backups."""
    chosen = os.environ.get("CHAT_BACKUP_DIR", "").strip()
    return Path(chosen).resolve() if chosen else settings.var / "backups"


def source_url(settings: StackSettings) -> str:
    """The one Redis to back up; a Cluster or Sentinel set is backed up node by node."""
    if settings.redis_cluster:
        raise BackupError(
            "a Redis Cluster is backed up per primary: run `python -m stack.backup "
            "--redis-url redis://HOST:PORT` for each (README: Backups and restore)")
    if settings.redis_sentinels:
        raise BackupError(
            "under Sentinel, back up the current primary or a replica: `python -m "
            "stack.backup --redis-url redis://HOST:PORT` (README: Backups and restore)")
    return settings.effective_redis_url


def _new_folder(root: Path, now: datetime) -> Path:
    """root/2026-11-29T23-59-00Z.partial (colons kept out of names); -2, -3 ... if taken."""
    stamp = now.strftime("%Y-%m-%dT%H-%M-%SZ")
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 100):
        name = stamp if n == 1 else f"{stamp}-{n}"
        if (root / name).exists():
            continue
        try:
            (root / (name + PARTIAL)).mkdir()
        except FileExistsError:
            continue
        return root / (name + PARTIAL)
    raise BackupError(f"too many backups named {stamp} in {root}")


def take_backup(url: str, root: Path) -> Path:
    """Stream an RDB of the Redis at `url` into a new folder under `root`; its path."""
    client = redis.Redis.from_url(url, socket_timeout=INFO_TIMEOUT_SECONDS)
    try:
        info = client.info("server")
        keyspace = client.info("keyspace")
    except redis.RedisError as error:
        raise BackupError(f"cannot reach Redis at {public_url(url)} (is the stack "
                          f"running?): {error}") from error
    finally:
        client.close()
    now = datetime.now(UTC)
    partial = _new_folder(root, now)
    rdb = partial / RDB_FILE
    try:
        stream_rdb(url, rdb)
        checked = check_rdb(rdb)
        manifest = Manifest(
            created=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            source=public_url(url),
            redis_version=str(info.get("redis_version", "")),
            keys=checked.keys,
            expires=checked.expires,
            bytes=rdb.stat().st_size,
            sha256=sha256(rdb),
            keys_live={db: int(v["keys"]) for db, v in keyspace.items()},
        )
        (partial / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
        done = partial.with_name(partial.name.removesuffix(PARTIAL))
        partial.rename(done)
        return done
    except BaseException:
        for leftover in partial.iterdir():
            leftover.unlink()
        partial.rmdir()
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stack.backup",
        description="Back up the chat's Redis (an RDB snapshot) without stopping the chat.")
    parser.add_argument("--to", type=Path, help="folder for backups "
                        "(default $CHAT_BACKUP_DIR, else var/backups)")
    parser.add_argument("--redis-url", help="back up this Redis instead of the stack's "
                        "(one node of a Cluster, a Sentinel primary or replica)")
    args = parser.parse_args(argv)
    settings = StackSettings.from_env()
    try:
        url = args.redis_url or source_url(settings)
        folder = take_backup(url, args.to.resolve() if args.to else backup_root(settings))
    except BackupError as error:
        print(f"backup failed: {error}", file=sys.stderr)
        return 1
    manifest = Manifest.read(folder)
    print(f"backup of {manifest.source}: {manifest.keys} keys, {manifest.bytes} bytes, "
          f"sha256 {manifest.sha256[:16]}…\n{folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
