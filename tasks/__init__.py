"""Celery tasks, thin like views: they take ids and plain JSON, call one core function and
decide retry. The logic lives in plain functions a test calls without a worker.

    sources.py       the Source protocol and SqlSource (reads for warm-ups; db/ via queries)
    records.py       the Records protocol and SqlRecords (snapshots and reports; db/reports)
    warming.py       warm-up logic: batched reads, pipelined writes, progress callbacks
    bulkwrite.py     fill missing keys in bulk: SET NX with the core's envelopes, one pipeline
    warmup.py        warmup_critical, warmup_all, warmup_members, warmup_data_type
    invalidation.py  on_member_change, on_bulk_operation (CacheInvalidationHooks)
    lifetimes.py     ages of entries at invalidation, per data type
    counters.py      counters merged across processes and summed over a window of snapshots
    keyspace.py      key distribution by pattern (sampled SCAN + MEMORY USAGE)
    metrics.py       snapshot (every minute), stored in PostgreSQL
    maintenance.py   the beat cadence, each job once per period; bodies in jobs/; a report
                     with an alert raises it (workers/alerts.py)
    alerts.py        deliver_alert: one alert POSTed to ALERT_WEBHOOK_URL, retried, dead-lettered
    monitor.py       the consistency monitor's checks: cached copies against the database
    consistency.py   check_consistency (every second): the monitor's due checks
    runtime.py       runtime_of(task): the worker's Runtime plus the task side's parts
                     (source, records, lifetimes), declared here and built per process

Task names, queues, limits, schedules and cadences are the routing table's
(workers/routing.py); tasks register with ``shared_task`` so any app from
workers.factory.create_app runs them. The dependency runs one way: tasks/ import workers/,
workers/ never import tasks/ (the worker loads the task modules by name at start-up;
tests/workers/test_layers.py holds the rule).
"""
