"""RDB files for backups: stream one from a live Redis, check one, load one into a
scratch redis-server. The Redis tools are Debian's `redis-cli`, `redis-check-rdb`
and `redis-server`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import redis

# `redis-cli --rdb` makes the server fork and stream a snapshot; a big Redis
# takes a while (and Redis waits `repl-diskless-sync-delay`, 5 s by default,
# for other replicas to share the fork).
STREAM_TIMEOUT_SECONDS = 3600.0
# A scratch server loading a big RDB answers LOADING until it is done.
LOAD_TIMEOUT_SECONDS = 600.0
POLL_SECONDS = 0.05
# SHUTDOWN waits for the AOF's last fsync; it never takes long.
STOP_TIMEOUT_SECONDS = 60.0
HASH_CHUNK_BYTES = 1 << 20


class BackupError(Exception):
    """A backup or restore refused or failed; the message says why, for the operator."""


def public_url(url: str) -> str:
    """`url` without its password, for manifests and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or ""
    netloc = f"{user}{host}:{parts.port}" if parts.port else f"{user}{host}"
    return parts._replace(netloc=netloc).geturl()


def redis_cli_args(url: str) -> tuple[list[str], dict[str, str]]:
    """redis-cli's connection flags for `url`, and its environment: the password goes
    in REDISCLI_AUTH, never on a command line others can read in `ps`."""
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.scheme == "unix":
        return ["-s", parts.path], env
    args = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
    if parts.scheme == "rediss":
        args.append("--tls")
    if parts.username:
        args += ["--user", unquote(parts.username)]
    if parts.password:
        env["REDISCLI_AUTH"] = unquote(parts.password)
    return args, env


def tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                   else None)
    if not found:
        raise BackupError(f"{name} is not installed (Debian: apt-get install redis-tools "
                          "redis-server)")
    return found


def stream_rdb(url: str, into: Path) -> None:
    """A point-in-time RDB of the Redis at `url`, written to `into` (redis-cli --rdb:
    the server forks, as for a replica, and sends its snapshot over the connection)."""
    args, env = redis_cli_args(url)
    done = subprocess.run([tool("redis-cli"), *args, "--rdb", str(into)], env=env,
                          capture_output=True, text=True, timeout=STREAM_TIMEOUT_SECONDS,
                          check=False)
    if done.returncode != 0 or not into.is_file():
        said = (done.stderr + done.stdout).strip().splitlines()
        raise BackupError(f"redis-cli --rdb failed: {said[-1] if said else done.returncode}")


@dataclass(frozen=True)
class RdbCheck:
    keys: int
    expires: int


def check_rdb(path: Path) -> RdbCheck:
    """redis-check-rdb's verdict on `path` (format and its own CRC): the keys it read."""
    done = subprocess.run([tool("redis-check-rdb"), str(path)], capture_output=True,
                          text=True, timeout=STREAM_TIMEOUT_SECONDS, check=False)
    keys = re.search(r"\[info\] (\d+) keys read", done.stdout)
    expires = re.search(r"\[info\] (\d+) expires", done.stdout)
    if done.returncode != 0 or keys is None or "RDB looks OK" not in done.stdout:
        # "--- RDB ERROR DETECTED ---", then "[offset 318] RDB CRC error" or the like.
        lines = done.stdout.split("ERROR DETECTED ---\n", 1)[-1].strip().splitlines()
        said = re.sub(r"^\[offset \d+\] ", "", lines[0]) if lines else str(done.returncode)
        raise BackupError(f"{path} is not a sound RDB file: {said}")
    return RdbCheck(int(keys.group(1)), int(expires.group(1)) if expires else 0)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Scratch:
    """A scratch redis-server's Unix socket."""

    socket: str

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(unix_socket_path=self.socket, db=db)

    def databases(self) -> list[int]:
        """The numbers of its databases that hold keys."""
        with self.client() as client:
            return sorted(int(db.removeprefix("db")) for db in client.info("keyspace"))


@contextmanager
def scratch_redis(folder: Path, dbfilename: str) -> Iterator[Scratch]:
    """A redis-server of our own that loads `folder/dbfilename`, reached only on a Unix
    socket (no port to collide or to let anyone in).

    AOF off, so it loads the RDB (with `appendonly yes` Redis reads only the AOF and
    would start empty), and no saving. Shut down, and waited for, on exit.
    """
    sockets = Path(tempfile.mkdtemp(prefix="chatfleet-restore-"))  # short: sun_path
    sock = sockets / "redis.sock"
    log = (sockets / "redis.log").open("wb")
    proc = subprocess.Popen(
        [tool("redis-server"), "--port", "0", "--unixsocket", str(sock),
         "--unixsocketperm", "700", "--dir", str(folder), "--dbfilename", dbfilename,
         "--appendonly", "no", "--save", "", "--daemonize", "no"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    client = redis.Redis(unix_socket_path=str(sock))
    try:
        _wait_loaded(client, proc, sockets / "redis.log")
        yield Scratch(str(sock))
    finally:
        if proc.poll() is None:
            with suppress(redis.RedisError):  # SHUTDOWN closes the connection under us
                client.shutdown(nosave=True)
            try:
                proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        client.close()
        log.close()
        shutil.rmtree(sockets, ignore_errors=True)


def _wait_loaded(client: redis.Redis, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + LOAD_TIMEOUT_SECONDS
    while True:
        try:
            client.ping()
            return
        except (redis.ConnectionError, redis.BusyLoadingError):
            pass
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise BackupError("a scratch redis-server could not load the backup: "
                              + " / ".join(tail))
        if time.monotonic() > deadline:
            raise BackupError("a scratch redis-server did not load the backup in time")
        time.sleep(POLL_SECONDS)
