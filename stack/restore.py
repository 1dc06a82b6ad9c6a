"""`make restore FROM=var/backups/<time>`: bring a backup back into a stopped stack.

    python -m stack.restore var/backups/2026-11-29T23-59-00Z
    python -m stack.restore --force DIR   # even though the chat runs (see below)

First the backup is checked (SHA-256 against its manifest, then redis-check-rdb);
a damaged one is refused before anything changes. Then:

- The stack's own Redis (stopped, as is the whole stack): its files in
  `var/redis` are moved aside to `var/redis-before-restore-<time>/` (never
  deleted), and the backup becomes its data. That Redis runs with
  `appendonly yes`, and then loads only the AOF, ignoring a `dump.rdb`; so a
  scratch redis-server loads the RDB with AOF off and is switched on with
  `CONFIG SET appendonly yes`, which writes a fresh AOF of what it holds:
  that AOF is what the stack's Redis loads at its next start.
- An outside Redis (CHAT_REDIS_URL): the scratch server loads the RDB and every
  key is copied over with DUMP/RESTORE (TTLs kept, database numbers kept). The
  target must be empty.

Either way each room gets a new epoch, so a browser that saw messages newer
than the backup is told `reset` `lost` for the room when it resumes, instead of
keeping messages Redis no longer has.

The stack must be stopped (its supervisord, its Redis, every chat instance),
or for an outside Redis the instances stopped and the target empty. `--force`
overrides that: an outside Redis, or the stack's own while it runs, is
flushed and loaded over the network, under whatever is connected.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

from pubsub.keys import Keys
from pubsub.publish import new_epoch
from stack.backup import Manifest
from stack.rdb import BackupError, Scratch, check_rdb, public_url, scratch_redis, sha256
from stack.settings import StackSettings

# DUMP/RESTORE in batches of this many keys: one round trip each way per batch.
COPY_BATCH = 500
# A fresh AOF of a big dataset takes a while; this only catches one that hangs.
AOF_REWRITE_TIMEOUT_SECONDS = 3600.0
POLL_SECONDS = 0.05
PROBE_TIMEOUT_SECONDS = 1.0
SCRATCH_RDB = "restore.rdb"


def verify(folder: Path) -> Manifest:
    """The backup's manifest, once its file matches it; else BackupError, nothing touched."""
    manifest = Manifest.read(folder)
    rdb = folder / manifest.file
    if not rdb.is_file():
        raise BackupError(f"{rdb} is missing")
    digest = sha256(rdb)
    if digest != manifest.sha256 or rdb.stat().st_size != manifest.bytes:
        raise BackupError(f"{rdb} is damaged: its SHA-256 is {digest}, the manifest says "
                          f"{manifest.sha256}; nothing was restored")
    checked = check_rdb(rdb)
    if checked.keys != manifest.keys:
        raise BackupError(f"{rdb} holds {checked.keys} keys, the manifest says "
                          f"{manifest.keys}; nothing was restored")
    return manifest


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def _supervisord_pid(var: Path) -> int | None:
    """The stack's supervisord, if its pidfile names a live supervisord."""
    try:
        pid = int((var / "supervisord.pid").read_text().strip())
        alive = b"supervisord" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if alive else None


def instances_up(settings: StackSettings) -> list[int]:
    return [p for p in settings.instance_ports() if answers(settings.address, p)]


def running_parts(settings: StackSettings) -> list[str]:
    """What of the stack still runs, in words; empty when it is stopped."""
    parts = []
    pid = _supervisord_pid(settings.var)
    if pid is not None:
        parts.append(f"supervisord (pid {pid})")
    if settings.starts_redis and answers("127.0.0.1", settings.redis_port):
        parts.append(f"its Redis on port {settings.redis_port}")
    ports = instances_up(settings)
    if ports:
        parts.append("chat instances on ports " + ", ".join(map(str, ports)))
    return parts


def new_epochs(scratch: Scratch) -> int:
    """Give every room (in every database) a new epoch; how many rooms."""
    rooms = 0
    pattern = "*" + Keys().room_meta("*")  # whatever CHAT_KEY_PREFIX
    for db in scratch.databases():
        with scratch.client(db) as client:
            for key in client.scan_iter(match=pattern, count=1000, _type="hash"):
                if client.hexists(key, "epoch"):
                    client.hset(key, "epoch", new_epoch())
                    rooms += 1
    return rooms


def count_keys(scratch: Scratch) -> int:
    with scratch.client() as client:
        return sum(int(v["keys"]) for v in client.info("keyspace").values())


def write_aof(scratch: Scratch) -> None:
    """Switch the scratch server's AOF on and wait for its first rewrite to finish."""
    with scratch.client() as client:
        client.config_set("appendonly", "yes")
        deadline = time.monotonic() + AOF_REWRITE_TIMEOUT_SECONDS
        while True:
            info = client.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                if info["aof_last_bgrewrite_status"] != "ok":
                    raise BackupError("writing the AOF failed")
                return
            if time.monotonic() > deadline:
                raise BackupError("writing the AOF did not finish in time")
            time.sleep(POLL_SECONDS)


def restore_files(settings: StackSettings, folder: Path, manifest: Manifest) -> str:
    """Make the backup the stopped stack's Redis data; what was done, in words.
    On failure the data it was to replace is put back."""
    data = settings.var / "redis"
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    aside = settings.var / f"redis-before-restore-{stamp}"
    if data.is_dir() and any(data.iterdir()):
        data.rename(aside)
    data.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(folder / manifest.file, data / SCRATCH_RDB)
        with scratch_redis(data, SCRATCH_RDB) as scratch:
            keys, rooms = count_keys(scratch), new_epochs(scratch)
            write_aof(scratch)
        (data / SCRATCH_RDB).unlink()
    except BaseException:
        shutil.rmtree(data, ignore_errors=True)
        if aside.is_dir():
            aside.rename(data)
        raise
    moved = f"; the data it replaced is in {aside}" if aside.is_dir() else ""
    return f"{keys} keys and {rooms} rooms (new epochs) into {data} as an AOF{moved}"


def restore_network(url: str, folder: Path, manifest: Manifest, flush: bool) -> str:
    """Copy the backup's keys into the live Redis at `url`; what was done, in words."""
    try:
        with redis.Redis.from_url(url) as target:
            if target.dbsize() and not flush:
                raise BackupError(f"{public_url(url)} is not empty: restore into an empty "
                                  "Redis, or add --force to flush it first")
            with scratch_redis(folder, manifest.file) as scratch:
                rooms = new_epochs(scratch)
                if flush:
                    target.flushall()
                keys = sum(_copy_db(scratch, url, db) for db in scratch.databases())
    except redis.RedisError as error:
        raise BackupError(f"restoring into {public_url(url)} failed: {error}") from error
    return f"{keys} keys and {rooms} rooms (new epochs) into {public_url(url)}"


def _copy_db(scratch: Scratch, url: str, db: int) -> int:
    copied = 0
    pool = redis.ConnectionPool.from_url(url)
    pool.connection_kwargs["db"] = db  # the URL's own database number would win over db=
    with scratch.client(db) as source, redis.Redis(connection_pool=pool) as target:
        batch: list[bytes] = []
        for key in source.scan_iter(count=COPY_BATCH):
            batch.append(key)
            if len(batch) == COPY_BATCH:
                copied += _copy_batch(source, target, batch)
                batch = []
        copied += _copy_batch(source, target, batch)
    return copied


def _copy_batch(source: redis.Redis, target: redis.Redis, keys: list[bytes]) -> int:
    read = source.pipeline(transaction=False)
    for key in keys:
        read.dump(key)
        read.pttl(key)
    found = read.execute()
    write = target.pipeline(transaction=False)
    copied = 0
    for key, payload, ttl in zip(keys, found[::2], found[1::2], strict=True):
        if payload is None or ttl == -2:
            continue  # expired since the backup
        write.restore(key, max(ttl, 0), payload, replace=True)
        copied += 1
    write.execute()
    return copied


def restore(settings: StackSettings, folder: Path, force: bool = False) -> str:
    """Check the backup, check the stack is stopped, restore; what was done, in words."""
    manifest = verify(folder)
    if settings.redis_cluster or settings.redis_sentinels:
        raise BackupError("restoring a Redis Cluster or Sentinel set is done node by node "
                          "(README: Backups and restore)")
    running = running_parts(settings)
    if running and not force:
        raise BackupError("the stack is running (" + "; ".join(running) + "): stop it first "
                          "(Ctrl-C in `make run`), or add --force to restore under it")
    if settings.starts_redis and not answers("127.0.0.1", settings.redis_port):
        return restore_files(settings, folder, manifest)
    return restore_network(settings.effective_redis_url, folder, manifest, flush=force)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stack.restore",
        description="Restore a backup (made by `make backup`) into the stopped stack.")
    parser.add_argument("folder", type=Path, help="the backup's folder (with manifest.json)")
    parser.add_argument("--force", action="store_true",
                        help="restore although the chat runs; flushes a live target first")
    args = parser.parse_args(argv)
    try:
        done = restore(StackSettings.from_env(), args.folder.resolve(), args.force)
    except BackupError as error:
        print(f"restore refused: {error}", file=sys.stderr)
        return 1
    print(f"restored {args.folder}: {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
