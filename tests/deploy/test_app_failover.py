"""The application through a Sentinel failover: the API keeps answering, the cache comes back on
the promoted replica, Celery tasks complete, and no acknowledged write-behind event is lost.

Master, replica and three Sentinels run from the rendered deploy/redis configs (the production
down-after and min-replicas-to-write); the API (uvicorn, ACL user ``app``) and a Celery worker
(ACL user ``worker``) find the master through the Sentinels, configured as docker-compose.yml
configures them (tests/deploy/app_stack.py). The API acknowledges an activity event only once
a replica has it (WRITEBEHIND_REPLICAS=1: WAIT after the record script).

While one thread reads members and another posts activity events, one event per (member,
kind) slot so that PostgreSQL shows how often each one arrived, the master is SIGKILLed.
Recovery is the time from the kill to a read answered from the cache on the promoted replica,
for a member first read after the kill (a MISS that filled the cache, then a HIT). The old
master is then restarted and rejoins as a replica, so events can be acknowledged again; the
write-behind stream is flushed by the worker and PostgreSQL is compared with what the API
acknowledged.

Celery: a warm-up completes before the kill, another after the recovery; the worker follows
the failover through kombu's Sentinel transport without a restart. The tasks the worker holds
when the master dies (a flush draining, as beat keeps one running in production, and a
warm-up enqueued just before) must complete too, within HELD_TIMEOUT of the recovery, not
after the broker's visibility timeout. That is checked last, after every other figure.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from api_stub.management import hash_token
from cache.keys import Keys
from db import make_engine
from tests.deploy.app_stack import (
    BROKER_DB,
    Cluster,
    app_env,
    sentinel_cluster,
    settings_of,
)
from tests.deploy.conftest import MASTER_NAME, PREFIX, Deployment
from tests.support.api_process import ApiProcess
from tests.support.postgres import throwaway_database
from tests.support.redis_procs import RedisProcess, sentinel_master_addr, wait_for
from tests.workers.harness import final
from tests.workers.processes import WorkerProcess
from workers import routing
from workers.client import Progress, TaskClient

pytestmark = [pytest.mark.fault, pytest.mark.slow]

RECOVERY_TARGET_SECONDS = 10.0
SEED_MEMBERS = 600
READ_IDS = range(1, 41)  # read throughout by the reader thread
WARM_BEFORE = range(41, 61)  # a warm-up that completes before the kill
WARM_AT_KILL = range(61, 81)  # a warm-up enqueued just before the kill
WARM_AFTER = range(81, 101)  # a warm-up enqueued after the recovery
PROBE_ID = 101  # first read after the kill: MISS (fills), then HIT = recovered
ACTIVITY_IDS = range(201, SEED_MEMBERS + 1)
KINDS = {"login": "logins", "checkin": "checkins", "page_view": "page_views"}
ACKED_AFTER_REJOIN = 20  # events acknowledged once the old master is a replica again
VIEWER_TOKEN = "failover-viewer-token"  # only its hash is configured
TASK_TIMEOUT = 60.0
# Tasks a worker holds when the master dies (running or prefetched) must be done this long
# after the recovery, not after the broker's visibility timeout (celeryconfig.py).
HELD_TIMEOUT = 20.0
CLAIM_IDLE_MS = 3000

Slot = tuple[int, str]  # (member id, kind): one event each, so a count shows loss and repeats


@dataclass
class Read:
    at: float
    member_id: int
    status: int  # 0: no HTTP answer at all
    outcome: str  # X-Cache, or the transport error
    took: float = 0.0


@dataclass
class Post:
    at: float
    slot: Slot
    status: int  # 0: no HTTP answer at all
    detail: str


@dataclass
class Stack:
    cluster: Cluster
    api: ApiProcess
    worker: WorkerProcess
    tasks: TaskClient
    database_url: str
    keys: Keys = field(default_factory=lambda: Keys(PREFIX))


class Loop(threading.Thread):
    """Calls ``step`` until stopped; records what it gives."""

    def __init__(self, step: Callable[[httpx.Client], bool], base_url: str, pause: float) -> None:
        super().__init__(daemon=True)
        self.step, self.base_url, self.pause = step, base_url, pause
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url, timeout=5.0) as client:
                while not self.halt.is_set() and self.step(client):
                    self.halt.wait(self.pause)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error


def reader(base_url: str, reads: list[Read]) -> Loop:
    ids = itertools.cycle(READ_IDS)

    def step(client: httpx.Client) -> bool:
        member_id = next(ids)
        started = time.monotonic()
        try:
            answer = client.get(f"/api/v1/members/{member_id}")
        except httpx.HTTPError as exc:
            reads.append(Read(started, member_id, 0, repr(exc), time.monotonic() - started))
        else:
            outcome = answer.headers.get("x-cache", "")
            took = time.monotonic() - started
            reads.append(Read(started, member_id, answer.status_code, outcome, took))
        return True

    return Loop(step, base_url, 0.01)


def writer(base_url: str, posts: list[Post], at: dt.datetime) -> Loop:
    slots = iter([(m, kind) for m in ACTIVITY_IDS for kind in KINDS])

    def step(client: httpx.Client) -> bool:
        slot = next(slots, None)
        if slot is None:
            return False
        member_id, kind = slot
        started = time.monotonic()
        body = {"kind": kind, "at": at.isoformat(), "times": 1}
        try:
            answer = client.post(f"/api/v1/members/{member_id}/activity", json=body)
        except httpx.HTTPError as exc:
            posts.append(Post(started, slot, 0, repr(exc)))
        else:
            posts.append(Post(started, slot, answer.status_code, answer.text[:200]))
        return True

    return Loop(step, base_url, 0.02)


def acknowledged(posts: Iterable[Post]) -> list[Post]:
    return [post for post in posts if 200 <= post.status < 300]


def wait_final(tasks: TaskClient, task_id: str, timeout: float) -> Progress:
    """The task's state once final, or as it is after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (progress := tasks.progress(task_id)).ready and time.monotonic() < deadline:
        time.sleep(0.2)
    return progress


def unacked_task_ids(cluster: Cluster) -> list[str]:
    """Ids of the tasks in the broker's unacked hash: delivered to a worker, not acknowledged."""
    broker = cluster.deployment.client(current_master(cluster), "admin", db=BROKER_DB)
    try:
        entries = broker.hvals("unacked")
    finally:
        broker.close()
    return [json.loads(entry)[0]["headers"]["id"] for entry in entries]


def warmed(stack: Stack, ids: range, task_id: str) -> None:
    """The warm-up succeeded and wrote every member into the cache of the current master."""
    done = final(stack.tasks, task_id, TASK_TIMEOUT)
    assert done.state == "SUCCESS", (done, stack.worker.log()[-3000:])
    assert done.result["written"] + done.result["present"] == len(ids), done.result
    master = stack.cluster.deployment.client(current_master(stack.cluster), "app")
    try:
        assert master.exists(*stack.keys.members(ids)) == len(ids)
    finally:
        master.close()


def named_master(cluster: Cluster, proc: RedisProcess, *, by_all: bool = False) -> bool:
    """Whether any (or every) Sentinel names ``proc`` as the master."""
    names = [sentinel_master_addr(s, MASTER_NAME) == proc.address for s in cluster.sentinels]
    return all(names) if by_all else any(names)


def current_master(cluster: Cluster) -> RedisProcess:
    """The process the first Sentinel names as the master."""
    address = sentinel_master_addr(cluster.sentinels[0], MASTER_NAME)
    for proc in (cluster.master, cluster.replica):
        if proc.address == address:
            return proc
    raise AssertionError(f"the Sentinels name an unknown master {address}")


def flush_all(stack: Stack) -> list[dict[str, Any]]:
    """Flush runs on the worker until the stream's backlog is empty; their results."""
    results: list[dict[str, Any]] = []
    for _ in range(5):
        done = final(stack.tasks, stack.tasks.send(routing.FLUSH_WRITEBEHIND, 2.0), TASK_TIMEOUT)
        assert done.state == "SUCCESS", (done, stack.worker.log()[-3000:])
        results.append(done.result)
        if done.result["backlog"] == 0:
            return results
    raise AssertionError(f"the write-behind backlog did not drain: {results}")


def database_counts(database_url: str, day: dt.date) -> Counter[Slot]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT member_id, logins, checkins, page_views FROM member_activity_daily"
                    " WHERE day = :day"
                ),
                {"day": day},
            ).all()
    finally:
        engine.dispose()
    counts: Counter[Slot] = Counter()
    for member_id, *values in rows:
        for kind, value in zip(KINDS, values, strict=True):
            if value:
                counts[(int(member_id), kind)] = int(value)
    return counts


@pytest.fixture
def stack(make_deployment: Callable[..., Deployment], tmp_path: Path) -> Iterator[Stack]:
    deployment = make_deployment()
    with (
        sentinel_cluster(deployment) as cluster,
        throwaway_database("failover", members=SEED_MEMBERS) as database_url,
    ):
        api_env = app_env(
            cluster,
            "app",
            database_url,
            MANAGEMENT_TOKENS=f"viewer:{hash_token(VIEWER_TOKEN)}:failover-test",
        )
        worker_env = app_env(
            cluster,
            "worker",
            database_url,
            # The worker's cache calls on a busy test machine must not trip the 0.25 s default.
            REDIS_SOCKET_TIMEOUT="1",
            # The flush running when the master dies leaves entries pending under its pool
            # process's consumer name; a flush in another pool process takes them over once
            # their holder is this long silent (60 s in production).
            WRITEBEHIND_CLAIM_IDLE_MS=str(CLAIM_IDLE_MS),
        )
        api = ApiProcess(api_env, tmp_path / "api")
        worker = WorkerProcess(worker_env, tmp_path)
        tasks = TaskClient(settings_of(worker_env))
        try:
            api.start()
            worker.start()
            worker.wait_ready(tasks)
            yield Stack(cluster, api, worker, tasks, database_url)
        finally:
            tasks.close()
            api.stop()
            worker.stop()


def test_the_application_rides_through_a_failover_without_losing_acknowledged_events(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, keys = stack.cluster, stack.keys
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    reads: list[Read] = []
    posts: list[Post] = []
    with httpx.Client(base_url=stack.api.base_url, timeout=5.0) as http:
        # --- before: the cache serves, the worker runs tasks ----------------------------------
        for member_id in READ_IDS:
            assert http.get(f"/api/v1/members/{member_id}").status_code == 200
            assert http.get(f"/api/v1/members/{member_id}").headers["x-cache"] == "HIT"
        warmed(stack, WARM_BEFORE, stack.tasks.enqueue_warmup("members", list(WARM_BEFORE)))
        for member_id in WARM_BEFORE:
            assert http.get(f"/api/v1/members/{member_id}").headers["x-cache"] == "HIT"

        reading = reader(stack.api.base_url, reads)
        posting = writer(stack.api.base_url, posts, at)
        reading.start()
        posting.start()
        try:
            wait_for(
                lambda: len(acknowledged(posts)) >= 20,
                15,
                message=f"acknowledged activity events; posts: {posts[-3:]}",
            )
            # What beat keeps doing in production: a flush draining while the master dies.
            flush_in_flight = stack.tasks.send(routing.FLUSH_WRITEBEHIND, 5.0)
            time.sleep(1.0)
            warm_at_kill = stack.tasks.enqueue_warmup("members", list(WARM_AT_KILL))

            probe_key = cluster.deployment.client(cluster.master, "admin")
            try:
                assert probe_key.exists(keys.member(PROBE_ID)) == 0
            finally:
                probe_key.close()

            # --- the failover -------------------------------------------------------------
            cluster.master.kill()  # SIGKILL: no goodbye to the replica or the Sentinels
            killed_at = time.monotonic()
            # One member nobody read before: its first answer from the cache after the kill
            # proves a fill on the new master (and a HIT there) whatever the breaker did.
            probe_reads: list[Read] = []
            switched_at: float | None = None
            recovered_at: float | None = None
            while recovered_at is None:
                assert time.monotonic() - killed_at < 3 * RECOVERY_TARGET_SECONDS, probe_reads
                if switched_at is None and named_master(cluster, cluster.replica):
                    switched_at = time.monotonic()
                started = time.monotonic()
                answer = http.get(f"/api/v1/members/{PROBE_ID}")
                outcome = answer.headers.get("x-cache", "")
                took = time.monotonic() - started
                probe_reads.append(Read(started, PROBE_ID, answer.status_code, outcome, took))
                if outcome == "HIT":
                    recovered_at = time.monotonic()
                else:
                    time.sleep(0.05)
            recovery = recovered_at - killed_at
            assert switched_at is not None
            sentinel_switch = switched_at - killed_at
            wait_for(
                lambda: named_master(cluster, cluster.replica, by_all=True),
                10,
                message="every Sentinel to name the promoted replica",
            )
            filled = cluster.deployment.client(cluster.replica, "admin")
            try:
                assert filled.exists(keys.member(PROBE_ID)) == 1  # the fill is on the replica
                assert filled.info("replication")["role"] == "master"
            finally:
                filled.close()

            # --- the old master comes back as a replica: events can be acknowledged again ---
            time.sleep(1.0)  # reads and posts go on against a master without a replica
            cluster.master.restart()
            wait_for(
                lambda: (
                    cluster.deployment.replication(cluster.master).get("master_link_status") == "up"
                ),
                30,
                0.2,
                message="the old master to rejoin as a replica of the promoted one",
            )
            rejoined_at = time.monotonic()
            wait_for(
                lambda: sum(p.at > rejoined_at for p in acknowledged(posts)) >= ACKED_AFTER_REJOIN,
                20,
                message="events acknowledged after the old master rejoined",
            )
        finally:
            reading.stop()
            posting.stop()

        # --- after: tasks enqueued after the failover complete, write-behind is flushed -------
        warmed(stack, WARM_AFTER, stack.tasks.enqueue_warmup("members", list(WARM_AFTER)))
        flushes = flush_all(stack)
        held = {
            name: wait_final(stack.tasks, task_id, HELD_TIMEOUT)
            for name, task_id in (("flush", flush_in_flight), ("warm-up", warm_at_kill))
        }
        stuck = unacked_task_ids(cluster)
        health = http.get(
            "/api/v1/cache/health", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}
        ).json()

    # --- the figures ------------------------------------------------------------------------
    counts = database_counts(stack.database_url, at.date())
    acked = {post.slot for post in acknowledged(posts)}
    refused = {post.slot for post in posts} - acked
    lost = sorted(acked - set(counts))
    doubled = sorted(slot for slot, count in counts.items() if count > 1)
    unknown = sorted(set(counts) - acked - refused)
    recorded_unacknowledged = sorted(refused & set(counts))
    during = [read for read in [*reads, *probe_reads] if killed_at <= read.at < recovered_at]
    failed_reads = [read for read in [*reads, *probe_reads] if read.status != 200]
    not_503 = [post for post in posts if post not in acknowledged(posts) and post.status != 503]
    with capsys.disabled():
        print(
            f"\napp failover: {recovery:.2f} s from SIGKILL of the master to a cache fill and"
            f" HIT on the promoted replica (target < {RECOVERY_TARGET_SECONDS:.0f} s;"
            f" the Sentinels named it after {sentinel_switch:.2f} s);"
            f" reads {len(reads) + len(probe_reads)}, {len(during)} during the failover"
            f" {dict(Counter(read.outcome for read in during))}, the slowest"
            f" {max((read.took for read in during), default=0.0):.2f} s,"
            f" {len(failed_reads)} failed; activity events posted {len(posts)},"
            f" acknowledged {len(acked)}, refused {len(refused)}"
            f" ({len(recorded_unacknowledged)} of them recorded anyway),"
            f" acknowledged lost {len(lost)}, counted twice {len(doubled)};"
            f" flushes {[f['events'] for f in flushes]};"
            f" held by the worker at the kill: { ({n: p.state for n, p in held.items()}) }"
        )
    assert failed_reads == []
    assert during, "no read was answered while the master was down"
    assert recovery < RECOVERY_TARGET_SECONDS
    assert lost == []
    assert doubled == []
    assert unknown == []
    assert not_503 == [], not_503[:5]
    assert health["checks"]["redis"]["ok"], health["checks"]["redis"]
    assert health["checks"]["workers"]["ok"], health["checks"]["workers"]
    # Last: the tasks the worker held when the master died.
    assert {name: p.state for name, p in held.items()} == {
        "flush": "SUCCESS",
        "warm-up": "SUCCESS",
    }, (
        f"tasks held by the worker at the failover: {held}; task ids still in the broker's"
        f" unacked hash: {stuck}"
    )
