"""The flusher: drains one partition into ``apply`` in order, in batches of bounded size."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from cache.writebehind.buffer import WriteBehind
from cache.writebehind.errors import BatchOverlap, Unwritable
from cache.writebehind.events import (
    ActivityRows,
    Apply,
    Batch,
    StreamEvent,
    coalesce_columns,
    stream_id,
)


@dataclass
class FlushStats:
    batches: int = 0
    events: int = 0
    rows: int = 0
    replayed_batches: int = 0  # applied before: a crash fell between commit and acknowledgement
    overlaps: int = 0
    dead_lettered: int = 0
    failures: int = 0
    last_error: str = ""
    lags_ms: deque[int] = field(default_factory=lambda: deque(maxlen=200_000))

    def lag_quantile(self, q: float) -> float:
        """Accept-to-commit lag of recent entries, in seconds."""
        ordered = sorted(self.lags_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000 if ordered else 0.0


class Flusher:
    """Drains one partition's stream into ``apply`` in order, in batches bounded by size and
    linger time.

    ``drain`` overlaps reading and coalescing the next batch with applying the current one,
    in a second thread, and acknowledges a committed batch in a third while the next one is
    applied; batches are still applied one after another, each acknowledged after its
    commit, in order.
    """

    def __init__(self, wb: WriteBehind, apply: Apply, consumer: str, partition: int = 0) -> None:
        self.wb, self.apply, self.consumer = wb, apply, consumer
        self.partition, self.stream = partition, wb.streams[partition]
        self.config = wb.config
        self.stats = FlushStats()
        self._acker: ThreadPoolExecutor | None = None  # while draining
        self._acks: deque[Future[None]] = deque()

    def flush_once(self, block_ms: int | None = None) -> Batch:
        """Read one batch (pending entries first), apply it, acknowledge it."""
        batch = self._read(None, self.config.block_ms if block_ms is None else block_ms)
        if batch.events:
            self._apply(batch.events, coalesce_columns(batch.events))
        return batch

    def drain(self, seconds: float, *, until_empty: bool = False) -> FlushStats:
        """Flush for up to ``seconds``; with ``until_empty``, until nothing is left."""
        deadline = time.monotonic() + seconds
        cursor: str | None = None  # last id read; None: resume from the pending prefix
        inflight: Future[None] | None = None
        pool = ThreadPoolExecutor(1, thread_name_prefix="writebehind-apply")
        acker = ThreadPoolExecutor(1, thread_name_prefix="writebehind-ack")
        with pool, acker:
            self._acker = acker
            try:
                while (left := deadline - time.monotonic()) > 0:
                    if cursor is None and inflight is not None:  # a resume re-reads it
                        done, inflight = inflight, None
                        done.result()
                        self._settled(wait=True)
                    peek = until_empty or inflight is not None
                    batch = self._read(
                        cursor, 0 if peek else min(self.config.block_ms, int(left * 1000) + 1)
                    )
                    if batch.source == "busy":
                        cursor = None
                    elif batch.events or batch.rejects:
                        cursor = max(
                            [e.id for e in batch.events[-1:]] + [i for i, _ in batch.rejects],
                            key=stream_id,
                        )
                    rows = coalesce_columns(batch.events)
                    if inflight is not None:
                        done, inflight = inflight, None
                        done.result()
                    self._settled(wait=False)
                    if batch.events:
                        inflight = pool.submit(self._apply, batch.events, rows)
                    elif until_empty and batch.source == "empty":
                        break
                    if cursor is None or 0 < len(batch.events) < self.config.batch_size:
                        time.sleep(min(left, self.config.linger_ms / 1000))
            except BaseException:
                self._acker = None
                for future in [*([inflight] if inflight else []), *self._acks]:
                    future.exception()  # let it finish; the error in hand is raised
                self._acks.clear()
                raise
            self._acker = None
            if inflight is not None:
                inflight.result()
            self._settled(wait=True)
        return self.stats

    def _settled(self, *, wait: bool) -> None:
        """Raise the error of an acknowledgement that failed (its entries stay pending and
        are applied again, as applied before); with ``wait``, wait for all of them first."""
        while self._acks and (wait or self._acks[0].done()):
            self._acks.popleft().result()

    def _read(self, after: str | None, block_ms: int) -> Batch:
        size = self.config.batch_size
        batch = self.wb.read_batch(
            self.consumer, size, block_ms, after=after, partition=self.partition
        )
        for entry_id, reason in batch.rejects:
            self.wb.dead_letter([entry_id], reason, partition=self.partition)
            self.stats.dead_lettered += 1
        return batch

    def _apply(self, events: list[StreamEvent], rows: ActivityRows) -> None:
        try:
            self._apply_in_order(events, rows)
        except Exception as exc:
            self.stats.failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            raise

    def _apply_in_order(self, events: list[StreamEvent], rows: ActivityRows) -> None:
        try:
            applied = self.apply(self.stream, events[0].id, events[-1].id, rows)
        except BatchOverlap as exc:
            self.stats.overlaps += 1
            through = stream_id(exc.applied_through)
            self._ack([e.id for e in events if stream_id(e.id) <= through])
            if rest := [e for e in events if stream_id(e.id) > through]:
                self._apply_in_order(rest, coalesce_columns(rest))
            return
        except Unwritable as exc:
            bad = [e for e in events if e.member_id in exc.member_ids]
            if not bad and len(events) > 1:  # the culprit is unknown: halve, in stream order
                for part in (events[: len(events) // 2], events[len(events) // 2 :]):
                    self._apply_in_order(part, coalesce_columns(part))
                return
            self.wb.dead_letter([e.id for e in bad or events], str(exc), partition=self.partition)
            self.stats.dead_lettered += len(bad or events)
            if bad and (rest := [e for e in events if e.member_id not in exc.member_ids]):
                self._apply_in_order(rest, coalesce_columns(rest))
            return
        ids = [e.id for e in events]
        if self._acker is None:
            self._committed(ids, len(rows), applied)
        else:  # in order, in a thread of its own, while the next batch is applied
            self._acks.append(self._acker.submit(self._committed, ids, len(rows), applied))

    def _committed(self, ids: list[str], rows: int, applied: bool) -> None:
        """Acknowledge a committed batch, then count it."""
        self._ack(ids)
        now_ms = int(time.time() * 1000)
        self.stats.lags_ms.extend([now_ms - int(i[: i.index("-")]) for i in ids])
        self.stats.batches += 1
        self.stats.events += len(ids)
        if applied:
            self.stats.rows += rows
        else:
            self.stats.replayed_batches += 1

    def _ack(self, ids: list[str]) -> None:
        self.wb.ack(ids, partition=self.partition)
