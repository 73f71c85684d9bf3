"""The Celery side of the platform: app, queues and routes, beat schedule, client.

    routing.py    the routing table: per task its name, queue, limits, schedule, cadence,
                  report; the constants client and tasks share; no Celery import
    factory.py    create_app(settings) -> CacheCelery
    app.py        the module-level app for ``celery -A workers.app``
    runtime.py    per-process Runtime (cache service, period guard, publisher, parts)
    publisher.py  each process's cache counters published to Redis every few seconds
    periods.py    period ids and bounds, and the once-per-period guard of scheduled jobs
    beat.py       the beat schedule, rendered from the routing table (crontab)
    scheduler.py  LeaderScheduler: only the beat holding the leader lease sends
    flower.py     ``python -m workers.flower``: Flower with basic auth and persistent state
    client.py     enqueue by task name and read progress, for apps that import no task code
    alerts.py     the alert document for the webhook, its sender (never fails the caller)
                  and its dead letters

Importing the package builds nothing. workers/ never imports tasks/ (tasks/ import workers/):
the worker loads the task modules by name (factory.TASK_MODULES), and what only tasks use at
run time (database source, records) is declared by tasks/runtime.py as runtime parts.
"""
