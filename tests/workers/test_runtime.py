"""workers/runtime.py: one Runtime per process, and the parts code on top of it declares."""

from __future__ import annotations

from typing import Any

from config import Settings
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
