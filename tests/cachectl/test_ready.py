"""``wait_ready``'s decisions: a probe that never answers (kombu's publish reconnecting without
bound to a dead broker) is reported as not ready and cannot hold the others or the deadline;
a probe that raises is "not yet", once noticed; a probe is not asked again while it runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from cachectl.stack import Supervisor, wait_ready


def test_a_stuck_probe_is_reported_and_holds_neither_the_others_nor_the_deadline(
    tmp_path: Path,
) -> None:
    never = threading.Event()
    stuck_calls: list[float] = []

    def stuck() -> bool:
        stuck_calls.append(time.monotonic())
        never.wait()
        return True

    flaky_answers = iter([ConnectionError("broker away"), False, True])

    def flaky() -> bool:
        answer = next(flaky_answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    notices: list[str] = []
    started = time.monotonic()
    try:
        late = wait_ready(
            Supervisor(tmp_path, {}),
            {"worker": stuck, "api": flaky},
            timeout=3.0,
            notice=notices.append,
            probe_timeout=1.0,
        )
    finally:
        never.set()
    assert time.monotonic() - started < 4.5
    assert late == ["worker (no answer in 1 s)"]
    assert len(stuck_calls) == 1  # not asked again while the first call is under way
    assert notices == [
        "api not ready yet (ConnectionError: broker away); still waiting",
        "worker not ready yet (no answer in 1 s); still waiting",
    ]
