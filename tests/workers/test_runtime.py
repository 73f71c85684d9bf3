"""workers/runtime.py: one Runtime per process, wrapping one services object built in the
process that uses it, and the parts code on top of it declares."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import text

from config import Settings
from tasks.runtime import TaskRuntime
from tasks.writebehind import flusher_of
from workers.factory import create_app
from workers.publisher import read_published
from workers.runtime import Part, Runtime


class Thing:
    def __init__(self, label: str) -> None:
        self.label = label
        self.closed = False


def _close(thing: Thing) -> None:
    thing.closed = True


def _publish(thing: Thing) -> dict[str, Any]:
    return {"label": thing.label}


PLAIN: Part[Thing] = Part("plain", lambda _: Thing("plain"), _close)
PUBLISHED: Part[Thing] = Part("published", lambda _: Thing("published"), publish=_publish)


def test_a_part_is_built_once_published_and_closed_with_the_runtime(settings: Settings) -> None:
    runtime = Runtime(settings, publish=False)
    try:
        assert "published" not in runtime.publisher.document()  # not built, not published
        plain = runtime.part(PLAIN)
        assert runtime.part(PLAIN) is plain and plain.label == "plain"
        assert runtime.part(PUBLISHED).label == "published"
        assert runtime.publisher.publish()
        (document,) = read_published(runtime.cache).values()
        assert document["published"] == {"label": "published"}
        assert "plain" not in document
    finally:
        runtime.close()
    assert plain.closed


def test_an_app_replaces_a_parts_factory(settings: Settings) -> None:
    app = create_app(settings, parts={PLAIN: lambda _: Thing("fake")})
    try:
        assert app.runtime().part(PLAIN).label == "fake"
        assert app.runtime().part(PUBLISHED).label == "published"  # the others are as declared
        assert app.runtime() is app.runtime()  # one per process
    finally:
        app.close_runtime()
        app.close()


def test_a_worker_process_has_one_services_object(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"database_url": "sqlite://"}))
    try:
        worker = app.runtime()
        runtime = TaskRuntime(worker)
        assert app.runtime() is worker  # built once per process
        services = worker.services
        durable = services.redis("durable")
        assert runtime.cache is services.cache and runtime.cache.core is services.core
        assert runtime.guard.client is durable and runtime.guard.keys is services.keys
        assert runtime.publisher.client is durable and runtime.publisher.cache is services.cache
        assert runtime.publisher.publish()  # the counters reach Redis through that client
        assert durable.exists(services.keys.system("metrics", runtime.publisher.process)) == 1
        # One engine under the source, the records and the write-behind flushers.
        engine = services.engine
        assert getattr(runtime.source, "engine", None) is engine
        assert getattr(runtime.records, "engine", None) is engine
        one, two = flusher_of(runtime, "w/0", 0), flusher_of(runtime, "w/1", 0)
        assert one is not two and one.wb is two.wb is services.writebehind
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        app.close_runtime()
        app.close()
    assert services.closed


def test_a_forked_child_builds_its_own_services(settings: Settings) -> None:
    app = create_app(settings)
    try:
        parent = app.runtime().services
        pid = os.fork()
        if pid == 0:  # a prefork pool process: never the parent's sockets
            code = 1
            try:
                child = app.runtime().services
                fresh = child is not parent and child.pid == os.getpid() != parent.pid
                code = 0 if fresh and child.cache.ping() else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert app.runtime().services is parent and parent.cache.ping()
    finally:
        app.close_runtime()
        app.close()
