"""The bodies of the maintenance jobs: plain functions of a JobContext, returning a Report.

    base.py        JobContext (cache, records, settings, period) and Report
    daily.py       hit and error rates of the previous day, alert state below thresholds
    backup.py      BGSAVE, wait for LASTSAVE to move, copy the RDB file (and to BACKUP_COPY_DIR)
                   with its manifest, keep the newest N
    manifest.py    a copy's manifest: sha256 and size, Redis identity, inventory; atomic writes
    inventory.py   what a Redis node holds (families, streams, queues), compared after a restore
    loaded_copy.py a copy loaded into a private redis-server
    ttl_review.py  per data type: hit rate, invalidation rate, age at invalidation -> TTL
    capacity.py    memory trend over the previous month, projected days until maxmemory
    audit.py       Redis version and security configuration

tasks/maintenance.py wraps each in a Celery task that runs it once per period and stores its
Report in PostgreSQL.
"""
