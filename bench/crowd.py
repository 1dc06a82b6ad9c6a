"""crowd: 100,000 logged-in idle WebSockets through HAProxy on one box, a room of 1,000 among them.

    python -m bench.crowd                 # 100,000 sockets, a 1,000-member room
    python -m bench.crowd --sockets 200 --members 20 --window 2 --baseline 1 --settle 1

chatfleet's stack (rate limit off) with enough chat processes, HAProxy
processes and load-generator processes for the sockets under this box's
descriptor limit (a process holds at most its hard RLIMIT_NOFILE; see
bench/fronts.py): each chat process and each load worker takes its share,
each HAProxy at most FILL_SHARE of what it can hold. Then, as bench/idle
does for 10,000: an empty baseline; the sockets open (each its own login,
names shared in groups, each name's first socket before the others so the
lobby's `joined` notices stay few), spread over 127.0.0.0/8 source
addresses; RSS per role after they settle; CPU per role over an idle window
(a keep-alive every CHAT_PING_INTERVAL, 50 s by default, every fourth a
ping, and one session-check pass in 120 s). The HAProxy processes stand in
for one HAProxy: each checks the instances every `haproxies` seconds, so
that the instances see one check a second, as from one. Last, every
`sockets / members`-th socket joins one room and one of them publishes
`--rate` messages a second for `--seconds`: delivered, lost, p50/p99.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from bench.crowd_worker import Census, CrowdPlan, Fanout, Opened, worker_main
from bench.fanout import percentile
from bench.fronts import Front, extra_haproxies, haproxies_needed, haproxy_info
from bench.idle import RoleRow
from bench.procs import bench_target, cpu_of, cpu_seconds, roles, rss_bytes
from bench.rawws import source_addresses
from bench.targets import ChatfleetTarget
from stack.limits import raise_nofile
from stack.settings import EdgeLimits

ROOM = "crowd"
# Descriptors a chat process or a load worker keeps besides its sockets
# (Redis pool, listeners, logs, pipes).
PROCESS_FD_RESERVE = 1_000
# Sockets are dealt out exactly (socket i to instance i mod N), so a chat
# process or load worker may fill more of its descriptors than a HAProxy.
PROCESS_FILL_SHARE = 0.9
# While waiting on the load workers, HAProxy's view is looked at this often; a run
# whose chat processes have all been DOWN there for ABORT_SECONDS is given up
# (overloaded: a process lagging past the 3 s check timeout is taken out).
WATCH_SECONDS = 5.0
ABORT_SECONDS = 90.0
# Sockets per source address: well inside one address's ephemeral port range.
SOCKETS_PER_SOURCE = 5_000
# Sockets being set up at once per chat process. More only queue up in the
# process (logins are CPU-bound) and add event-loop lag: a process that lags
# 10 s behind its presence refresh has its users swept out of the lobby, and
# each `left` goes to every socket (100,000 frames). A first 100,000 run
# opening 200 at a time over 6 processes melted down that way at 92,000.
OPEN_CONCURRENCY_PER_PROCESS = 10


@dataclass
class Shape:
    """How many processes of each kind hold the sockets, and the fd limit that decided it."""

    nofile: int
    instances: int
    haproxies: int
    workers: int


@dataclass
class CrowdResult:
    shape: Shape
    sockets_wanted: int
    sockets_open: int
    sockets_still_open: int
    open_seconds: float
    open_cores: dict[str, float]
    busiest_open_worker: float  # cores of the busiest load worker while opening
    window_seconds: float
    rows: list[RoleRow]
    load_cores: float  # the load workers over the idle window
    load_rss: int
    members: int
    fanout: Fanout
    failures: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    haproxy_conns: list[int] = field(default_factory=list)  # each HAProxy's current connections
    haproxy_maxconn: int = 0  # the maxconn each HAProxy took from its fd limit
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # Lobby `joined`/`left` frames the sockets heard while the other sockets of
    # the names opened, and in the window: none unless presence flaps (only a
    # name's first socket announces it, and those open first).
    churn_rest: int = 0
    churn_window: int = 0

    @property
    def expected(self) -> int:
        return self.fanout.sent * self.members

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.fanout.received)

    @property
    def short_members(self) -> int:
        """Members that missed something."""
        return sum(1 for n in self.fanout.per_member if n < self.fanout.sent)

    @property
    def p50_ms(self) -> float:
        return percentile(sorted(self.fanout.latencies_ms), 0.50)

    @property
    def p99_ms(self) -> float:
        return percentile(sorted(self.fanout.latencies_ms), 0.99)


def shape_for(args: argparse.Namespace, nofile: int) -> Shape:
    per_process = max(1, int((nofile - PROCESS_FD_RESERVE) * PROCESS_FILL_SHARE))
    return Shape(nofile=nofile,
                 instances=max(args.instances, math.ceil(args.sockets / per_process)),
                 haproxies=max(args.haproxies, haproxies_needed(args.sockets, nofile)),
                 workers=max(args.workers, math.ceil(args.sockets / per_process)))


def plans(args: argparse.Namespace, shape: Shape, url: str) -> list[CrowdPlan]:
    sources = source_addresses(max(1, math.ceil(args.sockets / SOCKETS_PER_SOURCE)))
    every = max(1, args.sockets // args.members) if args.members else 0
    bounds = [w * args.sockets // shape.workers for w in range(shape.workers + 1)]
    return [CrowdPlan(url=url, instances=shape.instances, first=bounds[w],
                      count=bounds[w + 1] - bounds[w],
                      sockets_per_user=args.sockets_per_user, sources=sources, member_every=every,
                      concurrency=max(1, OPEN_CONCURRENCY_PER_PROCESS * shape.instances
                                      // shape.workers))
            for w in range(shape.workers)]


class Workers:
    """The load-generator processes and their pipes: an order goes to all, answers come back."""

    def __init__(self, plans: list[CrowdPlan], watch: Callable[[], None]) -> None:
        self.watch = watch  # called while answers are awaited; raises to give up
        self.pipes: list[Pipe] = []
        self.procs: list[multiprocessing.Process] = []
        for plan in plans:
            parent, child = multiprocessing.Pipe()
            proc = multiprocessing.Process(target=worker_main, args=(plan, child), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.ask_each([])  # each says "ready"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def ask(self, *order: Any) -> list[Any]:
        return self.ask_each([order] * len(self.pipes))

    def ask_each(self, orders: list[tuple[Any, ...]]) -> list[Any]:
        for pipe, order in zip(self.pipes, orders, strict=False):
            pipe.send(order)
        answers = []
        for pipe in self.pipes:
            while not pipe.poll(WATCH_SECONDS):
                self.watch()
            answers.append(pipe.recv())
        for answer in answers:
            if isinstance(answer, str) and answer.startswith("error"):
                raise RuntimeError(f"a load worker failed: {answer}")
        return answers

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("stop",))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()


class FrontWatch:
    """Raises once HAProxy has had no chat process UP for ABORT_SECONDS."""

    def __init__(self, target: ChatfleetTarget) -> None:
        self.target = target
        self.last_up = time.monotonic()

    def __call__(self) -> None:
        try:
            up = "UP" in self.target.stack.server_states().values()
        except OSError:
            up = False
        now = time.monotonic()
        if up:
            self.last_up = now
        elif now - self.last_up > ABORT_SECONDS:
            raise RuntimeError(f"no chat process UP at HAProxy for {ABORT_SECONDS:.0f} s: "
                               "the stack is overloaded (--keep-logs keeps its logs)")


def census(workers: Workers) -> Census:
    answers: list[Census] = workers.ask("count")
    return Census(sum(c.open for c in answers), sum(c.churn for c in answers))


def cores_over(pids_by_role: dict[str, list[int]], seconds: float) -> dict[str, float]:
    """Each role's CPU over `seconds` of waiting, in cores."""
    before = {role: cpu_of(pids) for role, pids in pids_by_role.items()}
    started = time.monotonic()
    time.sleep(seconds)
    return cores_since(pids_by_role, before, time.monotonic() - started)


def cores_since(pids_by_role: dict[str, list[int]], before: dict[str, float],
                elapsed: float) -> dict[str, float]:
    return {role: (cpu_of(pids) - before[role]) / elapsed for role, pids in pids_by_role.items()}


def open_sockets(workers: Workers,
                 pids: dict[str, list[int]]) -> tuple[Opened, dict[str, float], float]:
    """Every name's first socket, then the rest: the total, each role's cores meanwhile,
    and the busiest load worker's."""
    before = {role: cpu_of(p) for role, p in pids.items()}
    each_before = [cpu_seconds(pid) for pid in workers.pids]
    started = time.monotonic()
    total = Opened(0, 0.0)
    for which in ("heads", "rest"):
        heard = census(workers).churn
        for answer in workers.ask("open", which):
            total.sockets += answer.sockets
            total.failures.update(answer.failures)
            total.retries.update(answer.retries)
    total.seconds = time.monotonic() - started
    total.churn = census(workers).churn - heard
    busiest = max(cpu_seconds(pid) - b for pid, b in zip(workers.pids, each_before, strict=True))
    return total, cores_since(pids, before, total.seconds), busiest / total.seconds


def measure(args: argparse.Namespace, shape: Shape, var: Path) -> CrowdResult:
    """Start the stack and the extra HAProxy processes, observe, stop them all."""
    # A socket tried again is a new login of its name: room for those, so that
    # no login past the user's cap ends one whose socket is open.
    env = {"CHAT_MAX_SOCKETS_PER_LOGIN": str(args.sockets_per_user),
           "CHAT_MAX_LOGINS_PER_USER": str(2 * args.sockets_per_user)}
    # The HAProxy processes stand in for one that this box's fd limit forbids:
    # together they check each instance as often as it would, once a second.
    edge = replace(EdgeLimits.per_address_off(), check_interval_ms=1000 * shape.haproxies)
    with bench_target("chatfleet", shape.instances, env, edge=edge) as target:
        assert isinstance(target, ChatfleetTarget)
        try:
            with extra_haproxies(target.stack, shape.haproxies - 1, var) as extra:
                return observe(args, shape, target, extra)
        finally:
            if args.keep_logs:  # the stack's folder goes with it
                shutil.copytree(target.stack.settings.var / "log", args.keep_logs,
                                dirs_exist_ok=True)


def observe(args: argparse.Namespace, shape: Shape, target: ChatfleetTarget,
            extra: list[Front]) -> CrowdResult:
    """Baseline, open, settle, idle window, room fan-out: the figures of one run."""
    stats = [target.stack.settings.var / "haproxy.sock", *(e.stats for e in extra)]
    by_role = roles(target)
    by_role["haproxy"] += [e.pid for e in extra]
    workers = Workers(plans(args, shape, target.url), FrontWatch(target))
    try:
        pids = {**by_role, "load": workers.pids}
        print("pids: " + "; ".join(f"{k} {' '.join(map(str, v))}" for k, v in pids.items()),
              flush=True)
        print(f"baseline: {args.baseline:.0f} s with no sockets", flush=True)
        baseline = cores_over(pids, args.baseline)
        rss_before = {role: sum(rss_bytes(p) for p in ps) for role, ps in pids.items()}
        opened, open_cores, busiest = open_sockets(workers, pids)
        print(f"opened {opened.sockets}/{args.sockets} sockets in {opened.seconds:.1f} s",
              flush=True)
        time.sleep(args.settle)
        rss_after = {role: sum(rss_bytes(p) for p in ps) for role, ps in pids.items()}
        infos = [haproxy_info(s) for s in stats]
        print(f"measuring {args.window:.0f} s of idle sockets", flush=True)
        before = census(workers)
        cores = cores_over(pids, args.window)
        after = census(workers)
        joined = sum(workers.ask("join", ROOM)) if args.members else 0
        print(f"{joined} sockets joined {ROOM!r}; publishing {args.rate:g}/s "
              f"for {args.seconds:g} s", flush=True)
        workers.ask("arm")
        fanouts = workers.ask("fanout", ROOM, args.rate, args.seconds, args.drain)
    finally:
        workers.stop()
    rows = [RoleRow(role, rss_before[role], rss_after[role], opened.sockets, cores[role],
                    baseline[role]) for role in by_role]
    total = Fanout(sent=sum(f.sent for f in fanouts), received=sum(f.received for f in fanouts),
                   stray=sum(f.stray for f in fanouts),
                   latencies_ms=[x for f in fanouts for x in f.latencies_ms],
                   per_member=[n for f in fanouts for n in f.per_member])
    return CrowdResult(
        shape=shape, sockets_wanted=args.sockets, sockets_open=opened.sockets,
        sockets_still_open=after.open, open_seconds=opened.seconds, open_cores=open_cores,
        busiest_open_worker=busiest,
        window_seconds=args.window, rows=rows, load_cores=cores["load"] - baseline["load"],
        load_rss=rss_after["load"] - rss_before["load"], members=joined, fanout=total,
        failures=opened.failures, retries=opened.retries,
        haproxy_conns=[int(i.get("CurrConns", "0")) for i in infos],
        haproxy_maxconn=int(infos[0].get("Maxconn", "0")), loadavg=os.getloadavg(),
        churn_rest=opened.churn, churn_window=after.churn - before.churn)


def run(args: argparse.Namespace) -> CrowdResult:
    nofile = raise_nofile()  # the load workers and the stack inherit it
    shape = shape_for(args, nofile)
    print(f"fd limit {nofile}: {shape.instances} chat processes, {shape.haproxies} HAProxy "
          f"process(es), {shape.workers} load workers for {args.sockets} sockets; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    var = Path(tempfile.mkdtemp(prefix="chatfleet-crowd-"))
    try:
        result = measure(args, shape, var)
    finally:
        shutil.rmtree(var, ignore_errors=True)
    print_result(result)
    return result


def print_result(r: CrowdResult) -> None:
    print(f"\n{r.sockets_open} of {r.sockets_wanted} sockets opened in {r.open_seconds:.1f} s "
          f"({r.sockets_still_open} still open after the {r.window_seconds:.0f} s window); "
          f"{r.shape.instances} chat processes, {r.shape.haproxies} HAProxy, "
          f"{r.shape.workers} load workers (fd limit {r.shape.nofile})")
    for what, counts in (("given up", r.failures), ("tries failed", r.retries)):
        if counts:
            print(f"{what}: " + "; ".join(f"{n} x {kind}" for kind, n in counts.most_common(5)))
    print("cores while opening: " + ", ".join(f"{k} {v:.2f}" for k, v in r.open_cores.items())
          + f" (busiest load worker {r.busiest_open_worker:.2f})")
    print(f"lobby joined/left frames heard: {r.churn_rest} while names' other sockets opened, "
          f"{r.churn_window} in the window")
    print(f"connections per HAProxy: {'/'.join(map(str, r.haproxy_conns))} "
          f"(maxconn {r.haproxy_maxconn} each)")
    print(f"{'role':<8} {'RSS before MB':>13} {'RSS after MB':>12} {'KB/socket':>9} "
          f"{'% core':>7} {'baseline':>8} {'sockets % core':>14}")
    for row in r.rows:
        print(f"{row.role:<8} {row.rss_before / 2**20:>13.1f} {row.rss_after / 2**20:>12.1f} "
              f"{row.kb_per_socket:>9.2f} {100 * row.cores:>7.2f} {100 * row.baseline_cores:>8.2f} "
              f"{100 * row.socket_cores:>14.2f}")
    print(f"all servers: {100 * sum(row.cores for row in r.rows):.2f}% of a core idle, "
          f"{100 * sum(row.socket_cores for row in r.rows):.2f}% over the empty stack's; "
          f"load workers {100 * r.load_cores:.2f}% and {r.load_rss / 2**20:.0f} MB")
    print(f"fan-out to {r.members} members: {r.fanout.sent} sent, {r.fanout.received} of "
          f"{r.expected} delivered, {r.lost} lost ({r.short_members} members short), "
          f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms; "
          f"load average {r.loadavg[0]:.2f} {r.loadavg[1]:.2f} {r.loadavg[2]:.2f}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sockets", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=1_000,
                        help="sockets that join the room (every sockets/members-th)")
    parser.add_argument("--sockets-per-user", type=int, default=250,
                        help="sockets (each its own login) sharing one user name")
    parser.add_argument("--instances", type=int, default=2,
                        help="chat processes at least (more if the fd limit needs them)")
    parser.add_argument("--workers", type=int, default=2,
                        help="load-generator processes at least (more if the fd limit needs them)")
    parser.add_argument("--haproxies", type=int, default=1,
                        help="HAProxy processes at least (more if the fd limit needs them)")
    parser.add_argument("--window", type=float, default=120.0,
                        help="seconds of idle CPU measured "
                             "(keep-alives every 50 s, checks every 120 s)")
    parser.add_argument("--baseline", type=float, default=30.0,
                        help="seconds of empty-stack CPU measured first")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds between the last socket opening and reading RSS")
    parser.add_argument("--rate", type=float, default=10.0, help="room messages per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of publishing")
    parser.add_argument("--keep-logs", type=Path,
                        help="copy the stack's logs (chat processes, HAProxy, Redis) here")
    parser.add_argument("--drain", type=float, default=2.0,
                        help="deliveries are over after this long without one")
    return parser.parse_args(argv)


def main() -> None:
    run(parse_args())


if __name__ == "__main__":
    main()
