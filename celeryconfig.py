"""Celery settings, derived from the one Settings object.

``from_settings(settings)`` returns a plain dict that ``workers.factory.create_app`` hands to
``app.conf.update``. Nothing here reads the environment: the entry point builds Settings once
and passes it (see workers/app.py). Each setting says why it has its value and links the
Celery reference, ``DOCS#std-setting-<name>``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final
from urllib.parse import urlsplit

from kombu import Exchange, Queue

from config import Settings
from config.redis_role import RedisRole
from workers import beat, routing

DOCS: Final = "https://docs.celeryq.dev/en/stable/userguide/configuration.html"
REDIS_DOCS: Final = (
    "https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html"
)

AMQP_SCHEMES: Final = frozenset({"amqp", "amqps", "pyamqp"})  # RabbitMQ; anything else is Redis
BROKER_DB: Final = 1  # databases of the durable role (the design's: broker on 1, results on 2)
RESULTS_DB: Final = 2

# A message reserved by a worker and not acknowledged within this many seconds is handed to
# another worker (REDIS_DOCS#visibility-timeout). It must outlive the longest task (its hard
# time limit) and the longest retry countdown, or a task still running, or still waiting for
# its retry ETA, is delivered a second time. It is also how long a SIGKILLed worker's tasks
# wait before redelivery (a warm shutdown hands them back at once).
# CELERY_VISIBILITY_TIMEOUT overrides it (tests shorten it to watch a redelivery happen).
VISIBILITY_TIMEOUT: Final = 2 * max(routing.longest_hard_limit(), routing.RETRY_BACKOFF_MAX)

# Seconds a beat leads without renewing; a standby beat takes over within this after the
# leader dies (workers/scheduler.py).
BEAT_LEADER_LEASE: Final = 30.0

# Broker sockets: without a timeout a publish to a master that vanished without closing TCP
# (a Sentinel failover, a NAT drop) waits forever; kombu's health checks then never run.
BROKER_SOCKET_TIMEOUT: Final = 10.0
BROKER_CONNECT_TIMEOUT: Final = 5.0


def _sentinel_urls(role: RedisRole, db: int) -> str:
    """``sentinel://[user:password@]host:port/db;...``: one chunk per Sentinel."""
    return ";".join(
        f"sentinel://{role.auth()}{host}:{port}/{db}" for host, port in role.sentinel_hosts
    )


def _durable_url(settings: Settings, db: int) -> str:
    """A database of the durable Redis role (the cache role's Redis on a single-node
    install): through the Sentinels when it has them, so Celery follows a failover."""
    role = settings.redis_role("durable")
    return _sentinel_urls(role, db) if role.mode == "sentinel" else role.url_for(db)


def broker_url(settings: Settings) -> str:
    """CELERY_BROKER_URL wins (``redis://``, ``sentinel://`` or ``amqp://`` for RabbitMQ);
    else the durable Redis role, database 1."""
    return settings.celery_broker_url or _durable_url(settings, BROKER_DB)


def result_backend(settings: Settings) -> str:
    """CELERY_RESULT_BACKEND wins; else the durable Redis role, database 2, whatever the
    broker: task states must survive the cache role's evictions."""
    return settings.celery_result_backend or _durable_url(settings, RESULTS_DB)


def uses_rabbitmq(url: str) -> bool:
    return urlsplit(url).scheme in AMQP_SCHEMES


def visibility_timeout(settings: Settings) -> int:
    """The setting when given, else the derived default; one value for broker and results."""
    return settings.celery_visibility_timeout or VISIBILITY_TIMEOUT


def _transport_options(settings: Settings, url: str) -> dict[str, Any]:
    if uses_rabbitmq(url):
        # Publisher confirms: a publish returns once RabbitMQ took the message (into a quorum
        # queue: a majority of its nodes), so an enqueue that returned is not lost with a
        # node (https://docs.celeryq.dev/projects/kombu/en/stable/reference/kombu.transport.pyamqp.html).
        return {"confirm_publish": True}
    options: dict[str, Any] = {"visibility_timeout": visibility_timeout(settings)}
    if url.startswith("sentinel://"):
        # The Sentinels name the master; after a failover they name the new one
        # (REDIS_DOCS#configuration). Their own password, when set, is separate.
        role = settings.redis_role("durable")
        options["master_name"] = role.sentinel_master
        # The Sentinels of a TLS deployment speak TLS too: the *_use_ssl settings below only
        # reach the master's connections, these reach the Sentinels'.
        sentinel_kwargs = role.tls_options.redis_kwargs()
        sentinel_password = role.sentinel_password.get_secret_value()
        if sentinel_password:
            sentinel_kwargs["password"] = sentinel_password
        if sentinel_kwargs:
            options["sentinel_kwargs"] = sentinel_kwargs
    return options


def redis_ssl(settings: Settings, url: str) -> dict[str, Any] | None:
    """The TLS options of a Redis broker or result URL: rediss://, or sentinel:// with the
    durable role's TLS on; None for plain Redis and for other transports (amqp://)."""
    scheme = url.partition("://")[0]
    tls = settings.redis_role("durable").tls_options
    if scheme == "rediss" or (scheme == "sentinel" and tls.enabled):
        return replace(tls, enabled=True).celery_ssl()
    return None


def _redis_broker_options(settings: Settings, url: str) -> dict[str, Any]:
    return _transport_options(settings, url) | {
        "socket_timeout": BROKER_SOCKET_TIMEOUT,
        "socket_connect_timeout": BROKER_CONNECT_TIMEOUT,
        # kombu sweeps the unacked set every unacked_restore_interval (10 s) times this
        # throttle; its default of 10 leaves a dead worker's messages parked for up to 100 s
        # past the visibility timeout. Every 10 s costs one ZRANGE per worker.
        "unacked_restore_throttle": 1,
    }


def task_queues(rabbitmq: bool = False) -> tuple[Queue, ...]:
    """The queues of the routing table, each bound to its own exchange by its own name:
    nothing implicit. On RabbitMQ they are quorum queues (replicated, at-least-once) behind
    topic exchanges, the kind Celery's native delayed delivery (retries with a countdown on
    quorum queues) can bind; on Redis direct exchanges."""
    if not rabbitmq:
        return tuple(
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in routing.QUEUES
        )
    return tuple(
        Queue(
            name,
            Exchange(name, type="topic"),
            routing_key=name,
            queue_arguments={"x-queue-type": "quorum"},
        )
        for name in routing.QUEUES
    )


def _broker_specific(settings: Settings, broker: str) -> dict[str, Any]:
    if uses_rabbitmq(broker):
        return {
            # DOCS#std-setting-broker_transport_options: publisher confirms.
            "broker_transport_options": _transport_options(settings, broker),
            # DOCS#std-setting-task_default_queue_type: a queue declared from its name alone
            # (the default one) is a quorum queue like the table's.
            "task_default_queue_type": "quorum",
            "task_default_exchange_type": "topic",
            # DOCS#std-setting-worker_detect_quorum_queues: quorum queues refuse a global QoS
            # (prefetch per channel); detected, the worker sets a per-consumer prefetch.
            "worker_detect_quorum_queues": True,
        }
    return {
        # DOCS#std-setting-broker_transport_options: visibility_timeout above; master_name
        # for Sentinel; socket timeouts so a dead master is noticed.
        "broker_transport_options": _redis_broker_options(settings, broker),
        # DOCS#std-setting-worker_disable_prefetch (Redis only): take a message only when a
        # process is free. A prefetched message sits in the unacked set, which kombu tries to
        # restore into the master that just died; it would wait out the visibility timeout.
        "worker_disable_prefetch": True,
    }


def from_settings(settings: Settings) -> dict[str, Any]:
    broker = broker_url(settings)
    results = result_backend(settings)
    tls: dict[str, Any] = {}
    # DOCS#std-setting-broker_use_ssl and #std-setting-redis_backend_use_ssl: the CA and the
    # client certificate of the durable role's TLS group, the certificate always verified
    # (Celery refuses a rediss:// URL without ssl_cert_reqs; CERT_NONE would accept any server).
    if (broker_ssl := redis_ssl(settings, broker)) is not None:
        tls["broker_use_ssl"] = broker_ssl
    if (results_ssl := redis_ssl(settings, results)) is not None:
        tls["redis_backend_use_ssl"] = results_ssl
    return (
        _broker_specific(settings, broker)
        | tls
        | {
            # --- where ------------------------------------------------------------------------
            # DOCS#std-setting-broker_url: the durable Redis role (sentinel:// URLs, one per
            # Sentinel, when it has them, so the broker follows a failover), or RabbitMQ.
            "broker_url": broker,
            # DOCS#std-setting-result_backend: the durable role, its own database, never the
            # cache's, so a cache flush or eviction policy cannot lose a task's state.
            "result_backend": results,
            # DOCS#std-setting-result_backend_transport_options: the same visibility_timeout and
            # master_name as the broker; Celery reads some broker-side options from here too and
            # a mismatch silently falls back to the one-hour default
            # (https://github.com/celery/celery/issues/7651).
            "result_backend_transport_options": _transport_options(settings, results),
            # DOCS#std-setting-broker_connection_retry_on_startup: a worker started before Redis
            # (compose, a reboot) keeps retrying instead of exiting; also silences the 5.x warning.
            "broker_connection_retry_on_startup": True,
            # --- what crosses the wire: JSON only -------------------------------------------------
            # DOCS#std-setting-accept_content: anything else, pickle above all, is refused before
            # it is deserialized; unpickling a message is running code the sender chose.
            "accept_content": ["json"],
            # DOCS#std-setting-result_accept_content: the same for results read back.
            "result_accept_content": ["json"],
            # DOCS#std-setting-task_serializer, #std-setting-result_serializer,
            # #std-setting-event_serializer: tasks take ids and plain JSON; so do their results.
            "task_serializer": "json",
            "result_serializer": "json",
            "event_serializer": "json",
            # --- queues and routes ----------------------------------------------------------------
            # DOCS#std-setting-task_queues: the five queues of the routing table, declared.
            "task_queues": task_queues(rabbitmq=uses_rabbitmq(broker)),
            # DOCS#std-setting-task_create_missing_queues: off, so a route or a send_task naming
            # an undeclared queue raises QueueNotFound instead of creating a queue nobody consumes.
            "task_create_missing_queues": False,
            # DOCS#std-setting-task_default_queue (and _exchange, _routing_key): a declared queue;
            # only a task name without a route can land there.
            "task_default_queue": routing.DEFAULT_QUEUE,
            "task_default_exchange": routing.DEFAULT_QUEUE,
            "task_default_routing_key": routing.DEFAULT_QUEUE,
            # DOCS#std-setting-task_routes: by exact task name, so a client that only knows the
            # name (workers/client.py, send_task) is routed exactly like the task itself.
            "task_routes": routing.routes(),
            # --- delivery guarantees --------------------------------------------------------------
            # DOCS#std-setting-task_acks_late: acknowledge after the task ran, so a worker lost
            # mid-task means the message is delivered again. Every task in tasks/ is idempotent
            # (warm-ups overwrite, deletes repeat, maintenance is guarded per period); a task that
            # is not must say acks_late=False on its decorator.
            "task_acks_late": True,
            # DOCS#std-setting-task_reject_on_worker_lost: a pool process killed (OOM, SIGKILL)
            # requeues its message instead of marking it failed.
            "task_reject_on_worker_lost": True,
            # DOCS#std-setting-worker_cancel_long_running_tasks_on_connection_loss: off. On Redis
            # a lost connection (a Sentinel failover) redelivers nothing by itself: cancelling
            # marks the running task REVOKED and acknowledges it, and the task is lost. Left to
            # run, it finishes; a copy redelivered after the visibility timeout repeats an
            # idempotent task.
            "worker_cancel_long_running_tasks_on_connection_loss": False,
            # DOCS#std-setting-task_publish_retry_policy: publishing (send_task, self.retry())
            # rides out a failover (under 10 s, then the Sentinels' next answer) for up to ~18 s
            # instead of failing after kombu's default 0.6 s, which would turn a retry into
            # Reject(requeue=False) and drop the message.
            "task_publish_retry_policy": {
                "max_retries": 20,
                "interval_start": 0,
                "interval_step": 0.5,
                "interval_max": 1,
            },
            # DOCS#std-setting-result_backend_always_retry (and _max_retries,
            # _max_sleep_between_retries_ms): a state or progress update during a failover waits
            # for the new master instead of failing the task.
            "result_backend_always_retry": True,
            "result_backend_max_retries": 30,
            "result_backend_max_sleep_between_retries_ms": 1000,
            # DOCS#std-setting-worker_prefetch_multiplier: one message per process. Warm-ups run
            # for minutes; prefetching more would park short invalidations behind them. A worker
            # dedicated to cache.invalidate may raise it on its command line.
            "worker_prefetch_multiplier": 1,
            # DOCS#std-setting-task_soft_time_limit / #std-setting-task_time_limit: a safety net
            # for tasks that do not set their own (every task in workers/routing.py does).
            "task_soft_time_limit": 300,
            "task_time_limit": 330,
            # --- results and visibility -------------------------------------------------------
            # DOCS#std-setting-task_track_started: STARTED between PENDING and PROGRESS, so a
            # client can tell "queued" from "running".
            "task_track_started": True,
            # DOCS#std-setting-result_extended: name, args and worker stored with the result,
            # readable by the API and Flower after the events are gone.
            "result_extended": True,
            # DOCS#std-setting-result_expires: a day of history; the backend is not an archive.
            "result_expires": 86_400,
            # DOCS#std-setting-worker_send_task_events and #std-setting-task_send_sent_event:
            # Flower builds its task list from events, "sent" included (queued tasks show up).
            "worker_send_task_events": True,
            "task_send_sent_event": True,
            # --- time and beat ----------------------------------------------------------------
            # DOCS#std-setting-timezone / #std-setting-enable_utc: the cadence's periods are UTC
            # days, weeks, months and quarters, the same in every process whatever its TZ.
            "timezone": "UTC",
            "enable_utc": True,
            # DOCS#std-setting-beat_schedule: each scheduled TaskSpec's Beat (workers/routing.py),
            # rendered by workers/beat.py.
            "beat_schedule": beat.schedule(),
            # DOCS#std-setting-beat_scheduler: sends only while holding the leader lease, so a
            # second beat (another host, a restart overlapping the old one) stays idle
            # (workers/scheduler.py); the jobs' period guards back it up.
            "beat_scheduler": "workers.scheduler:LeaderScheduler",
            # Not a Celery setting: read by LeaderScheduler. A standby takes over within it.
            "beat_leader_lease": BEAT_LEADER_LEASE,
            # DOCS#std-setting-beat_max_loop_interval: the leader renews its lease every tick;
            # ticks at least this often keep the lease (a third of it) from lapsing.
            "beat_max_loop_interval": BEAT_LEADER_LEASE / 6,
        }
    )
