"""Alembic environment: which database, and how to run the migrations against it.

The URL, first found wins: ``config.attributes["url"]`` (db.migrate), ``-x url=...`` on the
command line, ``sqlalchemy.url`` in the ini file, else resolve_database_url(load_settings()).
SQLite runs in batch mode, since it cannot ALTER most things in place.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, pool

from db.engine import make_engine, normalize_url, resolve_database_url
from db.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    # Keep the application's loggers alive when Alembic runs inside it.
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url")
    if url:
        return normalize_url(str(url))
    from config import load_settings_or_exit

    return resolve_database_url(load_settings_or_exit())


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_offline() -> None:
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    # NullPool: a migration is a one-off; nothing should linger in a pool afterwards.
    engine = make_engine(database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
