"""Celery tasks, thin like views: they take ids and plain JSON, call one core function and
decide retry. The logic lives in plain functions a test calls without a worker.

    sources.py       the Source protocol and SqlSource (the only module that touches db/)
    warming.py       warm-up logic: batched reads, pipelined writes, progress callbacks
    warmup.py        warmup_critical, warmup_all, warmup_members, warmup_data_type
    invalidation.py  on_member_change, on_bulk_operation (CacheInvalidationHooks)
    metrics.py       snapshot (every minute)
    maintenance.py   the beat cadence, each job once per period

Task names, queues and time limits are in workers/routing.py; tasks register with
``shared_task`` so any app from workers.factory.create_app runs them.
"""
