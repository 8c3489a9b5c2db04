"""The run database's schema (tables, versions, migrations) and the definitions every part shares."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from planner.errors import CpPlanError
from planner.tableio import (
    COORD_AXES,
    COORD_COLUMN_KINDS,
    COORD_REQUIRED,
    CURVE_COLUMN_KINDS,
    FLOAT,
    INT,
    RUN_COLUMN_KINDS,
    STATUSES,
    TEXT,
)


SCHEMA_VERSION = 1  # incompatible changes only: an older cp-plan refuses a newer version


SCHEMA_REVISION = 2  # additive changes an older cp-plan ignores safely (see REVISIONS)


PROJECT_ROOT = Path(__file__).resolve().parents[2]


DEFAULT_DB_PATH = PROJECT_ROOT / "data" / "runs" / "runs.sqlite"


SQLITE_BUSY_TIMEOUT_S = 30.0


PG_SCHEMA_LOCK = 0x63705F706C616E  # pg_advisory_xact_lock key ("cp_plan") serializing schema creation


# Columns a training config fills when start_run's caller does not pass them.
CONFIG_COLUMNS = ("parameterization", "alpha", "n_embd", "n_layer", "n_head", "d_head", "base_n_embd",
                  "base_n_layer", "lr", "init_std", "vocab_size", "seq_len", "batch_size", "n_tokens", "steps")


_SA_TYPE = {TEXT: sa.Text, INT: sa.BigInteger, FLOAT: sa.Double}


metadata = sa.MetaData()


meta_table = sa.Table(
    "meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


runs_table = sa.Table(
    "runs", metadata,
    sa.Column("run_id", sa.String(200), primary_key=True),
    *[sa.Column(name, _SA_TYPE[kind], nullable=name not in ("status", "source", "created_at", "updated_at"))
      for name, kind in RUN_COLUMN_KINDS.items() if name != "run_id"],
    # bumped on every update: count + sum(rev) changes on every insert and update (fingerprint)
    sa.Column("rev", sa.BigInteger, nullable=False, default=0),
    # insertion order (imported rows share one timestamp): max + 1 inside the write transaction;
    # on PostgreSQL concurrent inserts may tie, and ties sort by run_id
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("extra_json", sa.Text),  # columns of imported tables that are not run columns
    sa.CheckConstraint(sa.column("status").in_(STATUSES), name="runs_status_known"),
    sa.Index("runs_config_hash", "config_hash"),
    sa.Index("runs_status", "status"),
    sa.Index("runs_seq", "seq"),
    sa.Index("runs_sweep_id", "sweep_id"),  # revision 2
)


curves_table = sa.Table(
    "curves", metadata,
    sa.Column("run_id", sa.String(200), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("step", sa.BigInteger, primary_key=True),
    *[sa.Column(name, _SA_TYPE[kind]) for name, kind in CURVE_COLUMN_KINDS.items() if name != "step"],
)


coord_table = sa.Table(
    "coord_checks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    *[sa.Column(name, _SA_TYPE[kind], nullable=name not in COORD_REQUIRED + ("created_at",))
      for name, kind in COORD_COLUMN_KINDS.items()],
    sa.CheckConstraint(sa.column("axis").in_(COORD_AXES), name="coord_axis_known"),
    sa.Index("coord_check_id", "check_id"),
)


# Upgrades from version v to v + 1, run in one transaction on first open of an older database.
MIGRATIONS: dict[int, Any] = {}


def _revision_2(conn: sa.Connection) -> None:
    """runs.attempts (claims of the run by sweep workers) and an index on runs.sweep_id."""
    if "attempts" not in {c["name"] for c in sa.inspect(conn).get_columns("runs")}:
        conn.execute(sa.text("ALTER TABLE runs ADD COLUMN attempts BIGINT"))
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS runs_sweep_id ON runs (sweep_id)"))


# Additive upgrades from revision r - 1 to r: new nullable columns and indexes only, so that an
# older cp-plan (which names its columns in every statement) keeps working on the database.
REVISIONS: dict[int, Any] = {2: _revision_2}


class NoDatabase(CpPlanError):
    """There is no run database at the path (a reader may treat it as holding no runs)."""


class LeaseLost(CpPlanError):
    """A fenced write by a worker that no longer holds the run's lease (another worker took it)."""


def iso_in(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def next_seq() -> sa.Select:
    return sa.select(sa.func.coalesce(sa.func.max(runs_table.c.seq), 0) + 1)


def damaged(display: str | None, what: str, fix: str = "fix or delete that row by hand (sqlite3)") -> CpPlanError:
    """The error for a database whose stored values cp-plan never writes (edited by hand, or damaged)."""
    where = f"run database {display}" if display else "the run database"
    return CpPlanError(f"{where} is damaged: {what}; {fix}, or restore a copy (`cp-plan runs snapshot` makes "
                       "consistent ones)")


def short_value(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def stored_json(text: Any, column: str, run_id: Any, display: str | None) -> Any:
    """A JSON column of a stored run (config_json, extra_json), parsed; None when empty. Text that
    is not JSON, or nested beyond the parser's depth, is a damaged database (one line)."""
    if text is None or text == "":
        return None
    try:
        return json.loads(text)
    except RecursionError:
        raise damaged(display, f"run {run_id!r} has {column} nested too deeply to be one cp-plan wrote") from None
    except (TypeError, ValueError) as exc:
        raise damaged(display, f"run {run_id!r} has {column} {short_value(text)}, not JSON ({exc})") from None
