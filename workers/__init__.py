"""The Celery side of the platform: app, queues and routes, beat schedule, client.

    routing.py    queue names and the task table (name, queue, time limits); no Celery import
    factory.py    create_app(settings) -> CacheCelery
    app.py        the module-level app for ``celery -A workers.app``
    runtime.py    per-process Runtime (cache service, period guard, publisher, db access)
    publisher.py  each process's cache counters published to Redis every few seconds
    periods.py    period ids and bounds, and the once-per-period guard of scheduled jobs
    beat.py       the beat schedule (crontab)
    scheduler.py  LeaderScheduler: only the beat holding the leader lease sends
    flower.py     ``python -m workers.flower``: Flower with basic auth and persistent state
    client.py     enqueue by task name and read progress, for apps that import no task code

Importing the package builds nothing.
"""
