from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from db.migrate import current_revision, downgrade, head_revision, upgrade
from db.models import Base

REPO = Path(__file__).resolve().parents[2]
TABLES = {
    "tiers",
    "statuses",
    "countries",
    "members",
    "payments",
    "member_activity_daily",
    "writebehind_offsets",
}


def test_postgresql_has_every_table_and_index(pg_engine: Engine, pg_url: str) -> None:
    inspector = inspect(pg_engine)
    assert set(inspector.get_table_names()) >= TABLES
    indexes = {ix["name"] for ix in inspector.get_indexes("members")}
    assert indexes == {
        "ux_members_email",
        "ix_members_first_name_lower",
        "ix_members_last_name_lower",
        "ix_members_status",
        "ix_members_tier",
        "ix_members_country",
    }
    assert current_revision(pg_url) == head_revision() is not None


def test_migration_matches_the_models_on_postgresql(pg_engine: Engine) -> None:
    with pg_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_sqlite_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    assert current_revision(url) == head_revision()
    downgrade(url, "base")
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == head_revision()


def test_alembic_ini_drives_the_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run = [sys.executable, "-m", "alembic", "-x", f"url={url}"]
    upgraded = subprocess.run([*run, "upgrade", "head"], cwd=REPO, capture_output=True, text=True)
    assert upgraded.returncode == 0, upgraded.stderr
    # "check" autogenerates against the models: it fails if the migration drifted from them.
    checked = subprocess.run([*run, "check"], cwd=REPO, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr
