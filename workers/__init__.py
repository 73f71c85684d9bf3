"""The Celery side of the platform: app, queues and routes, beat schedule, client.

    routing.py   queue names and the task table (name, queue, time limits); no Celery import
    factory.py   create_app(settings) -> CacheCelery
    app.py       the module-level app for ``celery -A workers.app``
    runtime.py   per-process Runtime (cache service, period guard, database source)
    periods.py   period ids and the once-per-period guard of scheduled jobs
    beat.py      the beat schedule (crontab)
    client.py    enqueue by task name and read progress, for apps that import no task code

Importing the package builds nothing.
"""
