"""The data layer: engines, schema, migrations, demo data and the queries the cache fronts."""

# audit defines a table: importing it puts the table in Base.metadata for Alembic.
from db import audit, serialize
from db.engine import (
    make_async_engine,
    make_engine,
    resolve_database_url,
    session_factory,
)
from db.errors import (
    Conflict,
    DatabaseUnavailable,
    DataError,
    InvalidData,
    NotFound,
    UnknownLookup,
)
from db.migrate import upgrade
from db.queries import (
    analytics_dashboard,
    count_members,
    create_member,
    delete_member,
    demographics,
    get_member,
    hottest_member_ids,
    import_members,
    list_members,
    lookup,
    members_after,
    members_by_ids,
    update_member,
)
from db.seed import SeedReport, seed

__all__ = [
    "Conflict",
    "DataError",
    "DatabaseUnavailable",
    "InvalidData",
    "NotFound",
    "SeedReport",
    "UnknownLookup",
    "analytics_dashboard",
    "audit",
    "count_members",
    "create_member",
    "delete_member",
    "demographics",
    "get_member",
    "hottest_member_ids",
    "import_members",
    "list_members",
    "lookup",
    "make_async_engine",
    "make_engine",
    "members_after",
    "members_by_ids",
    "resolve_database_url",
    "seed",
    "serialize",
    "session_factory",
    "update_member",
    "upgrade",
]
