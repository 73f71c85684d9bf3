"""celeryconfig.from_settings: what each derived setting must be, without a broker."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

import celeryconfig
from config import load_settings
from tests.support.redis_procs import make_tls_files
from workers import routing


def make(**overrides: object) -> dict[str, object]:
    return celeryconfig.from_settings(load_settings(_env_file=None, **overrides))


def test_json_only_in_and_out() -> None:
    conf = make()
    assert conf["accept_content"] == ["json"]
    assert conf["result_accept_content"] == ["json"]
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["event_serializer"] == "json"


def test_explicit_queues_and_routes() -> None:
    conf = make()
    declared = [queue.name for queue in conf["task_queues"]]  # type: ignore[attr-defined]
    assert declared == list(routing.QUEUES)
    assert conf["task_create_missing_queues"] is False
    assert conf["task_default_queue"] in declared
    routes = conf["task_routes"]
    assert isinstance(routes, dict)
    assert {route["queue"] for route in routes.values()} <= set(declared)
    assert set(routes) == {spec.name for spec in routing.TASKS}
    # Every beat entry names a routed task on that task's own queue.
    for entry in conf["beat_schedule"].values():  # type: ignore[attr-defined]
        assert routes[entry["task"]]["queue"] == entry["options"]["queue"]


def test_delivery_guarantees_and_events() -> None:
    conf = make()
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_send_task_events"] is True
    assert conf["task_send_sent_event"] is True
    assert conf["broker_connection_retry_on_startup"] is True


def test_visibility_timeout_outlives_every_task_and_matches_results() -> None:
    conf = make()
    broker = conf["broker_transport_options"]
    results = conf["result_backend_transport_options"]
    assert isinstance(broker, dict) and isinstance(results, dict)
    assert broker["visibility_timeout"] == results["visibility_timeout"]
    assert broker["visibility_timeout"] > routing.longest_hard_limit()
    assert broker["visibility_timeout"] > routing.RETRY_BACKOFF_MAX
    assert all(spec.soft_time_limit < spec.time_limit for spec in routing.TASKS)


def test_standalone_defaults_follow_settings() -> None:
    conf = make(redis_host="redis.internal", redis_password="s3cret")
    assert conf["broker_url"] == "redis://:s3cret@redis.internal:6379/1"
    assert conf["result_backend"] == "redis://:s3cret@redis.internal:6379/2"
    assert "master_name" not in conf["broker_transport_options"]  # type: ignore[operator]


def test_explicit_celery_urls_win() -> None:
    conf = make(
        celery_broker_url="redis://b:1/5",
        celery_result_backend="redis://r:2/6",
        redis_sentinels="s1:26379",
    )
    assert conf["broker_url"] == "redis://b:1/5"
    assert conf["result_backend"] == "redis://r:2/6"


def test_sentinel_broker_and_results() -> None:
    conf = make(
        redis_sentinels="s1:26379,s2:26380",
        redis_sentinel_master="cachemaster",
        redis_sentinel_password="sentinel-pw",
        redis_password="p@ss",
    )
    assert conf["broker_url"] == "sentinel://:p%40ss@s1:26379/1;sentinel://:p%40ss@s2:26380/1"
    assert conf["result_backend"] == "sentinel://:p%40ss@s1:26379/2;sentinel://:p%40ss@s2:26380/2"
    for name in ("broker_transport_options", "result_backend_transport_options"):
        options = conf[name]
        assert isinstance(options, dict)
        assert options["master_name"] == "cachemaster"
        assert options["sentinel_kwargs"] == {"password": "sentinel-pw"}


def test_sentinel_urls_are_understood_by_kombu_and_celery() -> None:
    from workers.factory import create_app

    app = create_app(load_settings(_env_file=None, redis_sentinels="s1:26379,s2:26380"))
    try:
        assert app.connection_for_write().transport_cls == "sentinel"
        backend = type(app.backend)
        assert backend.__name__ == "SentinelBackend"
    finally:
        app.close()


@pytest.mark.parametrize("spec", routing.TASKS, ids=lambda spec: spec.name)
def test_every_task_is_registered_under_its_routed_name(spec: routing.TaskSpec) -> None:
    from workers.factory import TASK_MODULES, create_app

    app = create_app(load_settings(_env_file=None))
    try:
        app.loader.import_default_modules()
        for module in TASK_MODULES:
            __import__(module)
        task = app.tasks[spec.name]
        assert task.time_limit == spec.time_limit
        assert task.soft_time_limit == spec.soft_time_limit
    finally:
        app.close()


def test_visibility_timeout_setting_applies_to_broker_and_results() -> None:
    conf = make(celery_visibility_timeout=7)
    for name in ("broker_transport_options", "result_backend_transport_options"):
        options = conf[name]
        assert isinstance(options, dict) and options["visibility_timeout"] == 7
    assert make()["broker_transport_options"]["visibility_timeout"] == (  # type: ignore[index]
        celeryconfig.VISIBILITY_TIMEOUT
    )


def test_one_effective_beat() -> None:
    conf = make()
    assert conf["beat_scheduler"] == "workers.scheduler:LeaderScheduler"
    lease, loop = conf["beat_leader_lease"], conf["beat_max_loop_interval"]
    assert isinstance(lease, float) and isinstance(loop, float) and loop < lease / 3


def test_tls_reaches_the_broker_the_results_and_the_sentinels(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    files = {
        "redis_tls": True,
        "redis_tls_ca_file": str(tls.ca_cert),
        "redis_tls_cert_file": str(tls.client_cert),
        "redis_tls_key_file": str(tls.client_key),
    }
    expected = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": str(tls.ca_cert),
        "ssl_certfile": str(tls.client_cert),
        "ssl_keyfile": str(tls.client_key),
    }
    standalone = make(**files)
    assert str(standalone["broker_url"]).startswith("rediss://")
    assert str(standalone["result_backend"]).startswith("rediss://")
    assert standalone["broker_use_ssl"] == standalone["redis_backend_use_ssl"] == expected

    sentinel = make(**files, redis_sentinels="s1:26379", redis_sentinel_password="pw")
    assert sentinel["broker_use_ssl"] == sentinel["redis_backend_use_ssl"] == expected
    for name in ("broker_transport_options", "result_backend_transport_options"):
        sentinel_kwargs = sentinel[name]["sentinel_kwargs"]  # type: ignore[index]
        assert sentinel_kwargs["password"] == "pw"
        assert sentinel_kwargs["ssl"] is True
        assert sentinel_kwargs["ssl_ca_certs"] == str(tls.ca_cert)
        assert sentinel_kwargs["ssl_cert_reqs"] == "required"

    # A RabbitMQ broker takes no Redis TLS options; the Redis results still do.
    mixed = make(**files, celery_broker_url="amqp://guest:guest@127.0.0.1:5672//")
    assert "broker_use_ssl" not in mixed
    assert mixed["redis_backend_use_ssl"] == expected
    # Plain Redis: no TLS settings at all.
    assert not {"broker_use_ssl", "redis_backend_use_ssl"} & set(make())


def test_a_rediss_url_is_accepted_by_kombu_and_celery(tmp_path: Path) -> None:
    """Celery refuses a rediss:// URL without ssl_cert_reqs; the settings supply it."""
    from workers.factory import create_app

    tls = make_tls_files(tmp_path)
    app = create_app(
        load_settings(_env_file=None, redis_tls=True, redis_tls_ca_file=str(tls.ca_cert))
    )
    try:
        assert app.connection_for_write().ssl["ssl_ca_certs"] == str(tls.ca_cert)
        connparams = app.backend.connparams  # type: ignore[attr-defined]
        assert connparams["ssl_cert_reqs"] == ssl.CERT_REQUIRED
        assert connparams["connection_class"].__name__ == "SSLConnection"
    finally:
        app.close()


def test_broker_and_results_live_on_the_durable_role() -> None:
    conf = make(
        redis_host="cache.internal",
        redis_password="cache-pw",
        durable_redis={"host": "durable.internal", "port": 6390, "password": "d-pw"},
    )
    assert conf["broker_url"] == "redis://:d-pw@durable.internal:6390/1"
    assert conf["result_backend"] == "redis://:d-pw@durable.internal:6390/2"


def test_durable_sentinels_carry_the_durable_master() -> None:
    conf = make(
        redis_sentinels="c1:26379",
        redis_sentinel_master="cache",
        durable_redis={"sentinels": "d1:26390,d2:26390", "sentinel_master": "durable"},
    )
    assert conf["broker_url"] == "sentinel://d1:26390/1;sentinel://d2:26390/1"
    assert conf["broker_transport_options"]["master_name"] == "durable"  # type: ignore[index]
    assert conf["result_backend_transport_options"]["master_name"] == "durable"  # type: ignore[index]


def test_rabbitmq_broker_uses_quorum_queues_and_confirms() -> None:
    conf = make(
        celery_broker_url="amqp://guest:guest@mq.internal:5672/membership",
        durable_redis={"host": "durable.internal"},
    )
    queues = conf["task_queues"]
    assert [queue.name for queue in queues] == list(routing.QUEUES)  # type: ignore[attr-defined]
    for queue in queues:  # type: ignore[attr-defined]
        assert queue.queue_arguments == {"x-queue-type": "quorum"}
        # Topic: the exchange kind Celery's native delayed delivery binds (countdowns).
        assert queue.exchange.type == "topic" and queue.routing_key == queue.name
    assert conf["task_default_queue_type"] == "quorum"
    assert conf["worker_detect_quorum_queues"] is True
    assert conf["broker_transport_options"] == {"confirm_publish": True}
    assert "worker_disable_prefetch" not in conf  # a Redis transport option
    # Results stay on the durable Redis role.
    assert conf["result_backend"] == "redis://durable.internal:6379/2"
