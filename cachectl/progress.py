"""Follow a task to its end with a progress bar, reading its PROGRESS meta (done/total)."""

from __future__ import annotations

import time
from typing import Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from workers.client import Progress as TaskProgress
from workers.client import TaskClient

POLL: Final = 0.2  # seconds between reads of the result backend (one GET each)


def follow(
    client: TaskClient, task_id: str, *, timeout: float, console: Console
) -> TaskProgress | None:
    """The task's final state, or None if it is not done within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        line = bar.add_task("queued", total=None)
        while time.monotonic() < deadline:
            state = client.progress(task_id)
            if state.total is not None:
                bar.update(line, total=state.total, completed=state.done or 0)
            bar.update(line, description=state.state.lower())
            if state.ready:
                if state.state == "SUCCESS" and state.total is not None:
                    bar.update(line, completed=state.total)
                return state
            time.sleep(POLL)
    return None
