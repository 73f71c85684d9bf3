"""Two ``celery beat`` processes at once: one sends, the other stands by and takes over when the
first dies, and every job still runs once per period."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from amqp.exceptions import NotFound
from redis.exceptions import ConnectionError as RedisConnectionError

from cache import CacheService
from cache.keys import Keys
from tests.support.redis_procs import start_redis
from tests.workers import harness, services
from tests.workers.processes import BeatProcess, wait_for
from workers import routing
from workers.factory import create_app
from workers.runtime import CacheCelery
from workers.scheduler import LeaderLease

SENT = "Scheduler: Sending due task"
# The jobs run once per period; the beat app ticks them every EVERY seconds.
JOBS = [spec for spec in routing.SCHEDULED if spec.cadence is not None]
EVERY, LEASE = 1.0, 3.0


def test_lease_is_exclusive_renewable_and_released(cache: CacheService) -> None:
    key = cache.keys.system("beat", "leader")
    client = cache.clients.writer
    first, second = LeaderLease(client, key, 2.0), LeaderLease(client, key, 2.0)
    assert first.hold() and not second.hold()
    first._checked = 0.0  # force a renewal round trip
    assert first.hold() and 1000 < client.pttl(key) <= 2000
    first.release()
    assert second.hold() and not first.hold()
    client.delete(key)  # the lease lapsed (a paused leader) ...
    third = LeaderLease(client, key, 2.0)
    assert third.hold()  # ... and another beat took it
    second._checked = 0.0
    assert not second.hold()  # renewal is compare-and-set: no stealing back
    assert third.hold()


def test_a_leader_cut_off_by_a_connection_error_leads_again_at_once(
    cache: CacheService,
) -> None:
    """A failover resets the leader's connection: its lease (its token, replicated) is still
    in the key, so it leads again on the next tick, not after the lease lapsed."""
    key = cache.keys.system("beat", "leader")
    client = cache.clients.writer
    leader, standby = LeaderLease(client, key, 30.0), LeaderLease(client, key, 30.0)
    assert leader.hold()
    renew = leader._renew

    def cut_off(*_args: Any, **_kwargs: Any) -> Any:
        raise RedisConnectionError("Connection reset by peer")

    leader._renew = cut_off
    leader._checked = 0.0
    assert not leader.hold()  # nobody can know who leads: it stops sending
    leader._renew = renew
    assert leader.hold() and not standby.hold()
    assert client.pttl(key) > 29_000  # renewed, not waited out
    leader.release()


def _sent(beat: BeatProcess) -> int:
    """Sends of the guarded jobs in a beat's log."""
    names = tuple(f"({spec.name})" for spec in JOBS)
    return sum(1 for line in beat.log().splitlines() if SENT in line and line.endswith(names))


def _results_since(stack: harness.Stack, since: dt.datetime) -> list[dict[str, Any]]:
    """Results of the guarded jobs (the unguarded interval tasks beat also sends, the Redis
    watch and the refresh-ahead, are not counted)."""
    names = {spec.name for spec in JOBS}
    metas = []
    for key in stack.results.scan_iter(match="celery-task-meta-*", count=1000):
        meta = json.loads(stack.results.get(key) or b"{}")
        done = meta.get("date_done")
        if meta.get("name") not in names:
            continue
        if done and dt.datetime.fromisoformat(done).replace(tzinfo=dt.UTC) >= since:
            metas.append(meta)
    return metas


@pytest.mark.slow
def test_two_beats_one_sender_each_job_once_per_period(clean_stack: harness.Stack) -> None:
    stack = clean_stack
    env = {**stack.env, "TEST_BEAT_EVERY": str(EVERY), "TEST_BEAT_LEASE": str(LEASE)}
    started = dt.datetime.now(dt.UTC)
    beats = [
        BeatProcess(env, stack.directory, name=f"beat-{n}", app="tests.workers.beat_app")
        for n in ("a", "b")
    ]
    try:
        for beat in beats:
            beat.start()
        leader: BeatProcess = wait_for(
            lambda: next((b for b in beats if _sent(b) >= 2 * len(JOBS)), None),
            30,
            "a beat to send two rounds",
        )
        standby = next(b for b in beats if b is not leader)
        time.sleep(3 * EVERY)
        assert standby.alive and _sent(standby) == 0  # both ran; one sent

        # The leader dies without releasing its lease: the standby takes over once it lapses.
        sent_before = _sent(leader)
        leader.kill()
        killed = time.monotonic()
        wait_for(lambda: _sent(standby) >= len(JOBS), 20, "the standby to take over")
        assert time.monotonic() - killed < LEASE + 5
        time.sleep(3 * EVERY)
        sent = sent_before + _sent(standby)
    finally:
        for beat in beats:
            beat.stop()

    # Every tick of both beats was executed by the worker...
    def executed() -> list[dict[str, Any]] | None:
        found = _results_since(stack, started)
        return found if len(found) >= sent - len(JOBS) else None

    metas = wait_for(executed, 30, "the ticks to be executed")
    # ... and of all those runs, exactly one per job and period did the work.
    ran = Counter(
        (meta["name"], meta["result"]["period"])
        for meta in metas
        if meta["status"] == "SUCCESS" and meta["result"]["ran"]
    )
    assert set(name for name, _ in ran) == {spec.name for spec in JOBS}
    assert set(ran.values()) == {1}, ran
    ticks = Counter(meta["name"] for meta in metas)
    assert all(count >= 3 for count in ticks.values()), ticks  # many ticks, one run each


@pytest.mark.slow
def test_on_rabbitmq_the_leader_beat_sends_every_job_to_its_quorum_queue(
    stack: harness.Stack, rabbitmq_url: str
) -> None:
    """Beat publishes each scheduled job to its queue on RabbitMQ (workers consuming quorum
    queues are tests/workers/test_rabbitmq.py's and test_redelivery.py's); its leader lease
    stays on the durable Redis role."""
    with start_redis() as own:
        env = services.stack_env(
            f"test-beat-amqp-{uuid.uuid4().hex[:8]}:",
            own.port,
            stack.database_url,
            CELERY_BROKER_URL=rabbitmq_url,
            TEST_BEAT_EVERY=str(EVERY),
            TEST_BEAT_LEASE=str(LEASE),
        )
        settings = harness.settings_from_env(env)
        app = create_app(settings)
        queues = {spec.queue for spec in JOBS}
        before = _waiting(app, queues)
        beat = BeatProcess(env, stack.directory, name="beat-amqp", app="tests.workers.beat_app")
        try:
            beat.start()
            wait_for(lambda: _sent(beat) >= 2 * len(JOBS), 30, "two rounds of every job")
            durable = own.client()
            try:
                lease = durable.exists(Keys(settings.redis_key_prefix).system("beat", "leader"))
            finally:
                durable.close()
        finally:
            beat.kill()  # its sends are counted; a warm stop adds nothing to check
        grown = _waiting(app, queues)
        app.control.purge()
        app.close()
    assert lease
    per_queue = Counter(spec.queue for spec in JOBS)
    for queue in queues:
        assert grown[queue] - before[queue] >= 2 * per_queue[queue], (queue, before, grown)


def _waiting(app: CacheCelery, queues: set[str]) -> dict[str, int]:
    """Messages ready on each queue, as the broker counts them (a passive declare)."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        counts = {}
        for name in queues:
            try:
                counts[name] = channel.queue_declare(name, passive=True).message_count
            except NotFound:  # not declared yet: nothing was ever sent to it
                channel = connection.channel()  # the broker closed the one that asked
                counts[name] = 0
        return counts
