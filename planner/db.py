"""The run database: every measured run, its loss curve, and the coordinate-check table.

One schema, written with SQLAlchemy 2 Core, serves a local SQLite file (the default) and a
shared PostgreSQL server (``--db postgresql://user@host/db``, driver psycopg 3) alike. The
schema is created on first use and carries its version in the ``meta`` table; a database
written by a newer cp-plan is refused rather than misread.

SQLite setup, for several processes writing at once (sweep workers): WAL journal (readers never
block the writer), ``busy_timeout`` of 30 s (a writer waits for the lock instead of failing),
``synchronous=FULL`` (a committed run survives power loss), foreign keys on, and every write
in one ``BEGIN IMMEDIATE`` transaction, which takes the write lock up front so two writers can
never deadlock upgrading a read lock. WAL needs a local disk: do not put the file on
NFS/Lustre/GPFS; use PostgreSQL to share across machines.

Schema versions: ``schema_version`` (in ``meta``) changes only for incompatible changes, and an
older cp-plan refuses a newer one; ``schema_revision`` counts additive changes (new nullable
columns, indexes) that an older cp-plan reads and writes safely, so a database shared by old and
new versions keeps working. Opening for writing applies missing revisions in one transaction;
opening for reading never changes the file (columns a revision adds read as missing).

Sweep workers claim runs through the database (:meth:`RunDB.enqueue`, :meth:`RunDB.claim`):
a claim is one write transaction that moves a ``pending`` run (or a ``running`` one whose
worker's lease expired, or whose worker process on this host is gone) to ``running`` under a
lease (``worker``, ``lease_expires_at``), so two workers never train the same run; the worker
renews the lease while it trains, and its writes are fenced by it (:class:`LeaseLost`).
Lease times are the workers' UTC clocks: keep them in sync (NTP) when workers share a database.

The default database is ``<project>/data/runs/runs.sqlite`` (the directory that holds the
``planner`` package), or ``$CP_PLAN_DB`` when set. Opening a new SQLite file for writing
creates its parent directories; opening for reading only (``create=False``) refuses a missing
file instead of creating an empty database.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import NullPool, StaticPool

from planner.errors import CpPlanError, mask_secrets
from planner.tableio import (
    CANONICAL_COLUMNS,
    COORD_AXES,
    COORD_BOUNDS,
    COORD_COLUMN_KINDS,
    COORD_REQUIRED,
    CURVE_BOUNDS,
    CURVE_COLUMN_KINDS,
    EXTRA_COLUMNS,
    FINISHED_STATUSES,
    FLOAT,
    INT,
    RUN_COLUMN_KINDS,
    RUN_COLUMNS,
    STATUSES,
    TEXT,
    TRAINED_SOURCE,
    WHERE_OPERATORS,
    BadValue,
    ImportPlan,
    coerce_value,
    prepare_import,
)

__all__ = ["RunDB", "default_db_url", "CANONICAL_COLUMNS", "EXTRA_COLUMNS", "RUN_COLUMNS", "STATUSES",
           "SCHEMA_VERSION", "SCHEMA_REVISION", "DEFAULT_DB_PATH", "LeaseLost", "local_worker_id"]

SCHEMA_VERSION = 1  # incompatible changes only: an older cp-plan refuses a newer version
SCHEMA_REVISION = 2  # additive changes an older cp-plan ignores safely (see _REVISIONS)
DEFAULT_LEASE_S = 300.0  # a claimed run is re-claimable this long after its worker's last renewal
DEFAULT_MAX_ATTEMPTS = 2  # claims per run and sweep: a failed or abandoned run is retried once
# A 'running' row without a lease (cp-plan train, or an older cp-plan's sweep) writes its progress
# every few seconds; one silent this long, or whose process on this host is gone, is abandoned.
NO_LEASE_STALE_S = 3600.0
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB_PATH = PROJECT_ROOT / "data" / "runs" / "runs.sqlite"
SQLITE_BUSY_TIMEOUT_S = 30.0
_PG_SCHEMA_LOCK = 0x63705F706C616E  # pg_advisory_xact_lock key ("cp_plan") serializing schema creation

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
_MIGRATIONS: dict[int, Any] = {}


def _revision_2(conn: sa.Connection) -> None:
    """runs.attempts (claims of the run by sweep workers) and an index on runs.sweep_id."""
    if "attempts" not in {c["name"] for c in sa.inspect(conn).get_columns("runs")}:
        conn.execute(sa.text("ALTER TABLE runs ADD COLUMN attempts BIGINT"))
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS runs_sweep_id ON runs (sweep_id)"))


# Additive upgrades from revision r - 1 to r: new nullable columns and indexes only, so that an
# older cp-plan (which names its columns in every statement) keeps working on the database.
_REVISIONS: dict[int, Any] = {2: _revision_2}


class NoDatabase(CpPlanError):
    """There is no run database at the path (a reader may treat it as holding no runs)."""


class LeaseLost(CpPlanError):
    """A fenced write by a worker that no longer holds the run's lease (another worker took it)."""


def local_worker_id() -> str:
    """``host:pid`` of this process: the ``worker`` recorded with the runs it writes or claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _local_worker_gone(worker: str | None) -> bool:
    """Whether ``worker`` (host:pid) is a process on this host that no longer exists (or is a
    zombie). Another host's worker, or an unparsable one, is never known to be gone."""
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _iso_in(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def _is_stale(status: str, worker: str | None, lease: str | None, updated_at: str | None, now: str) -> bool:
    """A 'running' row nobody is training any more: its lease expired, its local process is gone,
    or (no lease) it has been silent for NO_LEASE_STALE_S."""
    if status != "running":
        return False
    if _local_worker_gone(worker):
        return True
    if lease is not None:
        return lease < now
    cutoff = (datetime.fromisoformat(now) - timedelta(seconds=NO_LEASE_STALE_S)).isoformat(timespec="microseconds")
    return (updated_at or "") < cutoff


def queue_state(status: str, attempts: int | None, stale: bool, max_attempts: int) -> str:
    """Where one run row stands in the queue (pure; ``stale``: a 'running' row nobody trains any
    more, :func:`_is_stale`): 'done' or 'diverged' (finished); 'running' (a live worker holds
    it); 'claimable' (pending; failed or abandoned with attempts left); 'abandoned' (abandoned
    with its attempts used up: to be marked failed); 'failed' (its attempts used up). Enqueue,
    claim and queue_status all decide from it."""
    tries = attempts or 0
    if status in ("done", "diverged"):
        return status
    if status == "running":
        if not stale:
            return "running"
        return "claimable" if tries < max_attempts else "abandoned"
    if status == "failed":
        return "claimable" if 0 < tries < max_attempts else "failed"
    return "claimable"  # pending


def _advisory_key(text: str) -> int:
    """A signed 64-bit key for pg_advisory_xact_lock derived from ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def default_db_url() -> str:
    """``$CP_PLAN_DB`` if set, else the project's ``data/runs/runs.sqlite`` (as a path)."""
    env = os.environ.get("CP_PLAN_DB", "").strip()
    return env or str(DEFAULT_DB_PATH)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _sqlite_on_connect(dbapi_conn, _record) -> None:
    # The driver must not open transactions itself; _sqlite_on_begin does, with the right lock.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = FULL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def _sqlite_on_connect_ro(dbapi_conn, _record) -> None:
    # A read-only connection sets no journal mode and no sync level (both write the file).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cur.close()


def _sqlite_on_begin(conn) -> None:
    write = conn.get_execution_options().get("cp_plan_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _coerce_fields(fields: dict, kinds: dict[str, str], what: str, bounds: dict | None = None) -> dict:
    """Type-check keyword fields for a table; unknown names and bad values are errors.

    A non-finite float becomes None: SQLite cannot store NaN, and a diverged run's loss is
    described by its status and reason, not by a number."""
    out = {}
    for name, value in fields.items():
        kind = kinds.get(name)
        if kind is None:
            raise CpPlanError(f"{what}: unknown column {name!r}; known columns are {', '.join(kinds)}")
        if value is None:
            out[name] = None
            continue
        if kind == TEXT:
            if isinstance(value, (dict, list, tuple, set)):
                raise CpPlanError(f"{what}: {name}={value!r} must be text, not a {type(value).__name__}")
            out[name] = value.value if hasattr(value, "value") and isinstance(value.value, str) else str(value)
            continue
        if isinstance(value, float) and not math.isfinite(value):
            out[name] = None
            continue
        try:
            out[name] = coerce_value(name, kind, value, **(bounds or {}))
        except BadValue as exc:
            raise CpPlanError(f"{what}: {name}={value!r} {exc}") from None
    return out


class RunDB:
    """A run database at a SQLite path or SQLAlchemy URL (see the module docstring).

    ``create=False`` opens an existing database for reading and refuses a missing one, so a
    mistyped ``--db`` does not silently produce an empty result. Create one ``RunDB`` per
    process; after ``fork`` the engine is rebuilt on first use (connections are not shared).
    """

    def __init__(self, url_or_path: str | os.PathLike | None = None, *, create: bool = True) -> None:
        raw = str(url_or_path) if url_or_path is not None else default_db_url()
        self.path: Path | None = None
        self._memory = False
        if "://" in raw:
            try:
                url = sa.make_url(raw)
                url.port  # noqa: B018 (a malformed port raises only when read)
            except sa.exc.ArgumentError:
                raise CpPlanError(f"--db {mask_secrets(raw)!r} is neither a file path nor a SQLAlchemy URL; use e.g. "
                                  "runs.sqlite or postgresql://user@host/dbname") from None
            except ValueError:
                raise CpPlanError(f"--db {mask_secrets(raw)!r} has a port that is not a number; use e.g. "
                                  "postgresql://user@host:5432/dbname") from None
        else:
            url = sa.URL.create("sqlite", database=str(Path(raw).expanduser().absolute()))
        backend = url.get_backend_name()
        if backend == "sqlite" and url.query:
            # SQLite URL parameters: only mode=ro (read-only), which a command that writes must refuse
            # rather than ignore (the file would be written anyway)
            if dict(url.query) != {"mode": "ro"}:
                raise CpPlanError(f"--db {mask_secrets(raw)!r}: SQLite URL parameters other than ?mode=ro are not "
                                  "supported; give the path alone, e.g. sqlite:///runs.sqlite")
            if create:
                raise CpPlanError(f"--db {mask_secrets(raw)!r} opens the database read-only (mode=ro), and this "
                                  "command writes to it; drop ?mode=ro")
            url = url.set(query={})
        if backend == "sqlite":
            if url.database in (None, "", ":memory:"):
                self._memory = True
            else:
                self.path = Path(url.database).expanduser().absolute()
                url = url.set(database=str(self.path))
        elif backend == "postgresql" and url.drivername == "postgresql":
            url = url.set(drivername=_postgres_driver())
        self.url = url
        self.backend = backend
        self.display = str(self.path) if self.path else mask_secrets(url.render_as_string(hide_password=True))
        # Opened only to read (create=False): a SQLite file is opened so that reading never needs
        # write access and never leaves -wal/-shm files behind (see _sqlite_read_only_uri).
        self.read_only = not create
        self._check_location(create)
        self._engine: sa.Engine | None = None
        self._pid = -1
        self.schema_version = self._ensure_schema(create)

    # ------------------------------------------------------------ plumbing

    def _check_location(self, create: bool) -> None:
        if self.path is None:
            return
        if self.path.is_dir():
            raise CpPlanError(f"--db {self.path} is a directory; give a file, e.g. {self.path / 'runs.sqlite'}")
        if self.path.exists() and self.path.stat().st_size > 0:
            return
        if not create:
            raise NoDatabase(f"no run database at {self.path}; train or import runs first "
                              "(cp-plan train, cp-plan runs import), or point --db / $CP_PLAN_DB at one")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CpPlanError(f"cannot create the directory for the run database {self.path}: "
                              f"{exc.strerror}; choose another --db") from None

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None or self._pid != os.getpid():
            if self._engine is not None:
                self._engine.dispose(close=False)  # the parent's connections stay the parent's
            self._engine = self._make_engine()
            self._pid = os.getpid()
        return self._engine

    def _sqlite_read_only_uri(self) -> str | None:
        """How a read-only open reaches the file: None when this process may write the file and
        its directory (a normal connection, closed after each transaction, so SQLite checkpoints
        and removes its -wal/-shm files), else a ``mode=ro`` URI. Without write access a WAL
        reader could neither create the -shm file it needs nor remove it, and a -shm left by
        another user blocks later writers; so when no -wal file exists (no writer is active:
        one would have created it) the file is opened ``immutable`` (read as it is, no locks,
        no side files). A -wal file means a writer may be active: then ``mode=ro`` uses the
        side files that exist."""
        if self.path is None or not self.read_only:
            return None
        if os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK | os.X_OK):
            return None
        from urllib.parse import quote

        uri = f"file:{quote(str(self.path))}?mode=ro"
        if not Path(f"{self.path}-wal").exists():
            uri += "&immutable=1"
        return uri

    def _make_engine(self) -> sa.Engine:
        if self.backend == "sqlite":
            kw: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}}
            ro_uri = self._sqlite_read_only_uri()
            if self._memory:
                kw["poolclass"] = StaticPool
            elif self.read_only:
                kw["poolclass"] = NullPool  # each connection closes after its transaction
            if ro_uri is not None:
                import sqlite3

                kw["creator"] = lambda: sqlite3.connect(ro_uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S,
                                                        check_same_thread=False)
            engine = sa.create_engine(self.url, **kw)
            event.listen(engine, "connect", _sqlite_on_connect_ro if ro_uri is not None else _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        try:
            return sa.create_engine(self.url, pool_pre_ping=True)
        except (ImportError, sa.exc.NoSuchModuleError) as exc:
            raise CpPlanError(f"cannot use {self.display}: {exc}; install the driver, e.g. "
                              "pip install 'psycopg[binary]' for PostgreSQL") from None

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[sa.Connection]:
        """One transaction; a write takes the lock up front (SQLite ``BEGIN IMMEDIATE``)."""
        try:
            with self.engine.connect() as conn:
                if write:
                    conn.execution_options(cp_plan_write=True)
                with conn.begin():
                    yield conn
        except sa.exc.IntegrityError:
            raise
        except sa.exc.DBAPIError as exc:
            msg = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
            hint = (f"another process held the lock for over {SQLITE_BUSY_TIMEOUT_S:g} s; retry"
                    if "locked" in msg or "busy" in msg else
                    "is it a cp-plan run database, and reachable?")
            raise CpPlanError(f"run database {self.display}: {msg}; {hint}") from None

    def _ensure_schema(self, create: bool) -> int:
        def read_meta(conn) -> tuple[int | None, int]:
            if not sa.inspect(conn).has_table("meta"):
                return None, 0
            rows = dict(conn.execute(sa.select(meta_table.c.key, meta_table.c.value)
                                     .where(meta_table.c.key.in_(("schema_version", "schema_revision")))).all())
            if rows.get("schema_version") is None:
                return None, 0
            try:
                return int(rows["schema_version"]), int(rows.get("schema_revision") or 1)
            except (TypeError, ValueError):
                raise damaged(self.display, f"its meta table gives schema_version={rows['schema_version']!r}, "
                                            f"schema_revision={rows.get('schema_revision')!r} (whole numbers)",
                              fix="set them back by hand (sqlite3)") from None

        with self._tx() as conn:
            version, revision = read_meta(conn)
        if version is None and not create:
            raise CpPlanError(f"{self.display} holds no cp-plan run database (no schema); train or import "
                              "runs first, or point --db at the right database")
        if version is not None and version > SCHEMA_VERSION:
            raise CpPlanError(f"{self.display} has run-database schema v{version}, newer than this cp-plan's "
                              f"v{SCHEMA_VERSION}; upgrade cp-plan")
        if version == SCHEMA_VERSION and (revision >= SCHEMA_REVISION or not create):
            self.schema_revision = revision
            self._run_cols = self._read_run_columns() if revision < SCHEMA_REVISION else set(RUN_COLUMNS)
            return version
        with self._tx(write=True) as conn:
            if self.backend == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SCHEMA_LOCK})
            version, revision = read_meta(conn)  # another process may have created it meanwhile
            if version is None:
                metadata.create_all(conn)
                now = _now()
                conn.execute(sa.insert(meta_table), [
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                    {"key": "schema_revision", "value": str(SCHEMA_REVISION)},
                    {"key": "db_id", "value": uuid.uuid4().hex},
                    {"key": "created_at", "value": now},
                ])
                version, revision = SCHEMA_VERSION, SCHEMA_REVISION
            while version < SCHEMA_VERSION:
                if version not in _MIGRATIONS:
                    raise CpPlanError(f"{self.display}: no migration from schema v{version}; "
                                      "export the runs with an older cp-plan and import them into a new database")
                _MIGRATIONS[version](conn)
                version += 1
                conn.execute(sa.update(meta_table).where(meta_table.c.key == "schema_version")
                             .values(value=str(version)))
            if revision < SCHEMA_REVISION:
                for r in range(revision + 1, SCHEMA_REVISION + 1):
                    _REVISIONS[r](conn)
                if conn.execute(sa.select(meta_table.c.key).where(meta_table.c.key == "schema_revision")).first():
                    conn.execute(sa.update(meta_table).where(meta_table.c.key == "schema_revision")
                                 .values(value=str(SCHEMA_REVISION)))
                else:
                    conn.execute(sa.insert(meta_table).values(key="schema_revision", value=str(SCHEMA_REVISION)))
                revision = SCHEMA_REVISION
        self.schema_revision = revision
        self._run_cols = set(RUN_COLUMNS)
        return version

    def _read_run_columns(self) -> set[str]:
        with self._tx() as conn:
            return {c["name"] for c in sa.inspect(conn).get_columns("runs")} & set(RUN_COLUMNS)

    def _runs_select(self) -> sa.Select:
        """SELECT of every runs column this database has (an older revision opened read-only
        lacks the newer columns; they read as missing)."""
        if len(self._run_cols) == len(RUN_COLUMNS):
            return sa.select(runs_table)
        return sa.select(*[c for c in runs_table.c if c.name in self._run_cols or c.name in ("rev", "seq", "extra_json")])

    def _need_revision(self, what: str) -> None:
        if self.schema_revision < SCHEMA_REVISION:
            raise CpPlanError(f"{what}: {self.display} is at schema revision {self.schema_revision}, opened "
                              f"read-only; open it for writing (e.g. cp-plan sweep) to upgrade it to {SCHEMA_REVISION}")

    def worker_url(self) -> str:
        """The database as another process opens it (``RunDB(db.worker_url())``): the SQLite
        path or the full URL, password included; never print it."""
        if self._memory:
            raise CpPlanError("an in-memory run database cannot be shared with worker processes; use a file or a server")
        return str(self.path) if self.path is not None else self.url.render_as_string(hide_password=False)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> "RunDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunDB({self.display!r})"

    # ------------------------------------------------------------ writing runs

    def _new_run_row(self, config: dict, config_hash: str, fields: dict, what: str) -> dict:
        """A runs row for a new run: shape and HP columns from ``config`` unless in ``fields``."""
        if not isinstance(config, dict):
            raise CpPlanError(f"{what}: config must be a dict (e.g. dataclasses.asdict(cfg)), not {type(config).__name__}")
        if not isinstance(config_hash, str) or not config_hash:
            raise CpPlanError(f"{what}: config_hash must be a non-empty string, not {config_hash!r}")
        try:
            config_json = json.dumps(config, sort_keys=True, default=str, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CpPlanError(f"{what}: the config cannot be stored as JSON: {exc}") from None
        for reserved in ("config_json", "config_hash", "created_at", "updated_at"):
            if reserved in fields:
                raise CpPlanError(f"{what}: {reserved!r} is set by the database, not a field")
        row = {k: config[k] for k in CONFIG_COLUMNS if config.get(k) is not None}
        row.update(fields)
        row = _coerce_fields(row, RUN_COLUMN_KINDS, what)
        missing = [k for k, v in row.items() if k not in self._run_cols and v is not None]
        if missing:
            self._need_revision(what)
        now = _now()
        row.update(run_id=row.get("run_id") or uuid.uuid4().hex[:12], config_hash=config_hash,
                   config_json=config_json, created_at=now, updated_at=now, rev=0,
                   seq=_next_seq().scalar_subquery(), source=row.get("source") or TRAINED_SOURCE)
        return row

    def start_run(self, config: dict, config_hash: str, **fields) -> str:
        """Insert a run with status 'running' and return its run_id (uuid4 hex[:12] unless
        ``run_id`` is passed). Shape and HP columns not in ``fields`` come from ``config``;
        the whole config is stored as JSON."""
        row = self._new_run_row(config, config_hash, fields, "start_run")
        status = row.get("status") or "running"
        if status not in ("running", "pending"):
            raise CpPlanError(f"start_run: status {status!r}; a new run is 'running' (or 'pending'); "
                              "use finish_run to end it")
        row.update(status=status, worker=row.get("worker") or local_worker_id())
        try:
            with self._tx(write=True) as conn:
                conn.execute(sa.insert(runs_table).values(**row))
        except sa.exc.IntegrityError:
            raise CpPlanError(f"start_run: run_id {row['run_id']!r} already exists in {self.display}; "
                              "omit run_id to get a fresh one") from None
        return row["run_id"]

    def _check_holder(self, conn, run_id: str, holder: str | None, what: str) -> None:
        """Fencing: with ``holder``, the run must be 'running' under that worker's lease."""
        if holder is None:
            return
        cur = conn.execute(sa.select(runs_table.c.status, runs_table.c.worker)
                           .where(runs_table.c.run_id == run_id)).first()
        if cur is None or cur.status != "running" or cur.worker != holder:
            state = "is gone" if cur is None else f"is {cur.status!r} under worker {cur.worker!r}"
            raise LeaseLost(f"{what}: worker {holder} lost its claim on run {run_id!r} (the run {state}); "
                            "its lease expired while it was silent, and another worker may have taken the run")

    def _update(self, run_id: str, values: dict, what: str, require_loss: bool = False,
                holder: str | None = None) -> None:
        values = dict(values, updated_at=_now(), rev=runs_table.c.rev + 1)
        with self._tx(write=True) as conn:
            current = conn.execute(sa.select(runs_table.c.loss, runs_table.c.status)
                                   .where(runs_table.c.run_id == run_id)).first()
            if current is None:
                raise CpPlanError(f"{what}: no run {run_id!r} in {self.display}; `cp-plan runs list` shows the ids")
            if current.status == "done" and values.get("status", "done") != "done":
                raise CpPlanError(f"{what}: run {run_id!r} is 'done'; a finished run is never re-opened by a "
                                  f"sweep or a worker (to train it again: cp-plan runs retrain {run_id})")
            self._check_holder(conn, run_id, holder, what)
            loss = values.get("loss", current.loss)
            if require_loss and (loss is None or not math.isfinite(loss)):
                raise CpPlanError(f"{what}: run {run_id!r} cannot be 'done' without a finite final loss; "
                                  "pass loss=..., or finish it as 'diverged' or 'failed' with a reason")
            conn.execute(sa.update(runs_table).where(runs_table.c.run_id == run_id).values(**values))

    def finish_run(self, run_id: str, status: str, *, lease_holder: str | None = None, **fields) -> None:
        """End a run as 'done' (needs a finite ``loss``), 'diverged' or 'failed' (pass ``reason``).

        ``lease_holder`` (a claimed run's worker) fences the write: it raises :class:`LeaseLost`
        unless that worker still holds the run. A finished run holds no lease."""
        if status not in FINISHED_STATUSES:
            raise CpPlanError(f"finish_run: status {status!r} is not one of {', '.join(FINISHED_STATUSES)}")
        values = _coerce_fields(fields, RUN_COLUMN_KINDS, "finish_run")
        if "run_id" in values:
            raise CpPlanError("finish_run: run_id cannot change")
        values["status"] = status
        values["lease_expires_at"] = None
        self._update(run_id, values, "finish_run", require_loss=status == "done", holder=lease_holder)

    def update_run(self, run_id: str, *, lease_holder: str | None = None, **fields) -> None:
        """Change fields of a run (progress: ``step``; ``wall_s``; ...); ``lease_holder`` fences
        the write as in :meth:`finish_run`."""
        values = _coerce_fields(fields, RUN_COLUMN_KINDS, "update_run")
        for fixed in ("run_id", "created_at"):
            if fixed in values:
                raise CpPlanError(f"update_run: {fixed} cannot change")
        if "status" in values and values["status"] not in STATUSES:
            raise CpPlanError(f"update_run: status {values['status']!r} is not one of {', '.join(STATUSES)}")
        self._update(run_id, values, "update_run", require_loss=values.get("status") == "done",
                     holder=lease_holder)

    def snapshot(self, out: str | Path) -> dict:
        """A consistent copy of a SQLite run database at ``out`` (never the live file, which may
        lag its WAL while a sweep has it open): SQLite's online backup API into a temporary file
        beside ``out``, with the copy's 'running' rows marked 'failed' ("interrupted", saying
        whether the worker had stopped or was still training the source), checkpointed to one
        file (journal_mode DELETE) and moved into place atomically. Returns counts. The live
        database is not changed."""
        import sqlite3

        if self.path is None:
            raise CpPlanError(f"runs snapshot copies a SQLite database; {self.display} is {self.backend} "
                              "(use pg_dump for a server)")
        from planner.fileio import write_atomic

        out = Path(out).expanduser().absolute()
        if out == self.path:
            raise CpPlanError(f"runs snapshot: --out {out} is the database itself; give another path")
        out.parent.mkdir(parents=True, exist_ok=True)
        got: dict = {}

        def fill(tmp: str) -> None:  # the copy, written into write_atomic's temporary file
            src = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=60)
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
            finally:
                src.close()
            try:
                now = _now()
                rows = dst.execute("SELECT run_id, status, worker, lease_expires_at, updated_at FROM runs "
                                   "WHERE status = 'running'").fetchall()
                stale = [r[0] for r in rows if _is_stale(r[1], r[2], r[3], r[4], now)]
                for r in rows:  # nobody trains a run in the copy: each running row is interrupted there
                    why = ("its worker had stopped" if r[0] in stale else
                           f"still training in {self.display} under worker {r[2]}")
                    dst.execute("UPDATE runs SET status = 'failed', lease_expires_at = NULL, reason = ? "
                                "WHERE run_id = ? AND status = 'running'",
                                (f"interrupted in this snapshot ({why} when it was taken); resumable from its "
                                 "checkpoint", r[0]))
                dst.commit()
                dst.execute("PRAGMA journal_mode=DELETE")
                counts = dict(dst.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
                check = dst.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                dst.close()
            if check != "ok":
                raise CpPlanError(f"runs snapshot: the copy failed its integrity check ({check}); nothing written")
            got.update(runs=counts, rows=rows, stale=stale)

        try:  # atomic; an existing target keeps its mode; devices, FIFOs and sockets are refused
            out = write_atomic(out, fill, mode=0o644)
        except sqlite3.Error as exc:
            raise damaged(self.display, f"copying it failed ({exc})", fix="check that it is a cp-plan run database") from None
        counts, rows, stale = got["runs"], got["rows"], got["stale"]
        return {"out": str(out), "runs": counts, "marked_interrupted": len(rows),
                "of_stopped_workers": len(stale), "of_live_workers": len(rows) - len(stale)}

    def reopen_run(self, run_id: str) -> dict:
        """The one way to re-open a 'done', 'diverged' or 'failed' run: mark it 'pending' (no
        worker, no lease, no attempts) so that the next sweep holding its config trains it again.
        A user's action (``cp-plan runs retrain``); no claim, lease expiry or heartbeat does this.
        Returns the run as it was."""
        self._need_revision("reopen_run")
        before = self.get_run(run_id)
        if before["status"] in ("running", "pending"):
            raise CpPlanError(f"runs retrain: run {before['run_id']!r} is {before['status']!r} already; "
                              "only a finished run ('done', 'diverged' or 'failed') can be re-opened")
        c = runs_table.c
        with self._tx(write=True) as conn:
            res = conn.execute(sa.update(runs_table).where(c.run_id == before["run_id"], c.status == before["status"])
                               .values(status="pending", worker=None, lease_expires_at=None, attempts=0,
                                       reason=f"re-opened by the user (was {before['status']!r})",
                                       updated_at=_now(), rev=c.rev + 1))
            if res.rowcount != 1:
                raise CpPlanError(f"runs retrain: run {before['run_id']!r} changed while re-opening it; retry")
        return before

    def fail_stale_runs(self, config_hash: str, reason: str = "crashed") -> list[str]:
        """Mark this config's abandoned 'running' rows 'failed' and return their run_ids.

        A row is abandoned when its lease expired, its worker process on this host is gone, or
        (no lease) it has been silent for NO_LEASE_STALE_S (see ``_is_stale``). A killed
        ``cp-plan train`` leaves such a row; a fresh run of the same config calls this so the
        database does not show it 'running' forever. The reason names the worker and the last
        heartbeat."""
        c = runs_table.c
        done = []
        with self._tx(write=True) as conn:
            now = _now()
            rows = conn.execute(sa.select(c.run_id, c.status, c.worker, c.lease_expires_at, c.updated_at)
                                .where(c.config_hash == config_hash, c.status == "running")).all()
            for r in rows:
                if not _is_stale(r.status, r.worker, r.lease_expires_at, r.updated_at, now):
                    continue
                why = (f"{reason}: worker {r.worker or '?'} stopped (last heartbeat {r.updated_at}"
                       + (f", lease expired {r.lease_expires_at}" if r.lease_expires_at else "")
                       + "); a later run of the same config took over")
                res = conn.execute(sa.update(runs_table).where(
                    c.run_id == r.run_id, c.status == "running", c.updated_at == r.updated_at).values(
                    status="failed", reason=why, lease_expires_at=None, updated_at=now, rev=c.rev + 1))
                if res.rowcount == 1:
                    done.append(r.run_id)
        return done

    def add_curve(self, run_id: str, rows: list[dict], *, lease_holder: str | None = None) -> None:
        """Append loss-curve points (dicts with ``step`` and any of n_tokens, train_loss,
        val_loss, lr, tokens_per_s, wall_s, grad_norm). A step already stored is replaced, so a
        resumed run can re-log the steps after its checkpoint. ``lease_holder`` fences the write."""
        by_step: dict[int, dict] = {}
        for r in rows:
            if not isinstance(r, dict):
                raise CpPlanError(f"add_curve: each row must be a dict, not {type(r).__name__}")
            clean = _coerce_fields(r, CURVE_COLUMN_KINDS, "add_curve", CURVE_BOUNDS)
            if clean.get("step") is None:
                raise CpPlanError(f"add_curve: row {r!r} has no step")
            by_step[clean["step"]] = {**dict.fromkeys(CURVE_COLUMN_KINDS), **clean, "run_id": run_id}
        if not by_step:
            return
        steps = list(by_step)
        try:
            with self._tx(write=True) as conn:
                self._check_holder(conn, run_id, lease_holder, "add_curve")
                for i in range(0, len(steps), 500):
                    conn.execute(sa.delete(curves_table).where(curves_table.c.run_id == run_id,
                                                               curves_table.c.step.in_(steps[i:i + 500])))
                conn.execute(sa.insert(curves_table), list(by_step.values()))
        except sa.exc.IntegrityError:
            raise CpPlanError(f"add_curve: no run {run_id!r} in {self.display}; start_run first") from None

    # ------------------------------------------------------------ sweep queue: enqueue, claim, lease

    def _scope(self, config_hashes=None, sweep_id: str | None = None):
        if (config_hashes is None) == (sweep_id is None):
            raise CpPlanError("claim: give exactly one of config_hashes (a sweep's configs) or sweep_id")
        if sweep_id is not None:
            return runs_table.c.sweep_id == str(sweep_id)
        hashes = sorted({str(h) for h in config_hashes})
        if not hashes:
            return sa.false()
        return runs_table.c.config_hash.in_(hashes)

    def enqueue(self, config: dict, config_hash: str, **fields) -> tuple[str, str]:
        """Put one sweep config in the queue; returns ``(run_id, state)``, in one transaction:

        - ``'skipped'``: a 'done' or 'diverged' run of this config exists (run_id is it);
        - ``'held'``: a live worker is training it (a 'running' row whose lease holds);
        - ``'queued'``: run_id is now 'pending': the newest unfinished row of the config (a
          'failed' run, or an abandoned 'running' one, so it resumes from its checkpoint), with
          its attempts reset, or else a new row.
        """
        return self.enqueue_many([(config, config_hash, fields)])[0]

    def enqueue_many(self, items: list[tuple[dict, str, dict]]) -> list[tuple[str, str]]:
        """:meth:`enqueue` for a whole sweep (``(config, config_hash, fields)`` triples) in one
        transaction: the sweep is queued entirely or not at all."""
        self._need_revision("enqueue")
        new_rows = []
        for config, config_hash, fields in items:
            row = self._new_run_row(config, config_hash, dict(fields), "enqueue")
            row.update(status="pending", worker=None, lease_expires_at=None, attempts=0)
            new_rows.append(row)
        c = runs_table.c
        out = []
        with self._tx(write=True) as conn:
            if self.backend == "postgresql":  # serialize enqueues of a config across processes
                for h in sorted({r["config_hash"] for r in new_rows}):
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _advisory_key(h)})
            now = _now()
            for new_row in new_rows:
                rows = conn.execute(
                    sa.select(c.run_id, c.status, c.worker, c.lease_expires_at, c.updated_at)
                    .where(c.config_hash == new_row["config_hash"])
                    .order_by(c.seq.desc(), c.run_id.desc())).all()
                out.append(self._enqueue_one(conn, new_row, rows, now))
        return out

    @staticmethod
    def _enqueue_one(conn, new_row: dict, rows, now: str) -> tuple[str, str]:
        states = [queue_state(r.status, 0, _is_stale(r.status, r.worker, r.lease_expires_at, r.updated_at, now),
                              DEFAULT_MAX_ATTEMPTS) for r in rows]  # attempts are reset on a re-queue
        for r, state in zip(rows, states):
            if state in ("done", "diverged"):
                return r.run_id, "skipped"
        for r, state in zip(rows, states):
            if state == "running":
                return r.run_id, "held"
        for r in rows:
            if r.status in ("pending", "failed", "running"):
                # the same science (same hash); settings that do not change it (device, checkpoint
                # folder, ...) come from the command that queues it now, so a corrected flag fixes a retry
                conn.execute(sa.update(runs_table).where(runs_table.c.run_id == r.run_id).values(
                    status="pending", worker=None, lease_expires_at=None, attempts=0,
                    sweep=new_row.get("sweep"), sweep_id=new_row.get("sweep_id"),
                    config_json=new_row.get("config_json"), updated_at=now, rev=runs_table.c.rev + 1))
                return r.run_id, "queued"
        conn.execute(sa.insert(runs_table).values(**new_row))
        return new_row["run_id"], "queued"

    def claim(self, worker: str, lease_s: float = DEFAULT_LEASE_S, *, config_hashes=None,
              sweep_id: str | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> dict | None:
        """Claim one run of a sweep for ``worker`` (host:pid), or return None if none is free.

        One write transaction picks, in queue order, a run whose config has no 'done'/'diverged'
        run and no live 'running' row, that is 'pending', or 'failed' after fewer than
        ``max_attempts`` claims (retry), or 'running' but abandoned (lease expired, or its process
        on this host gone); marks it 'running' under ``worker`` until now + ``lease_s``, and
        counts the attempt. An abandoned run that used up its attempts is marked 'failed' instead.
        Returns the run (``get_run``'s dict). Scope: ``config_hashes`` or ``sweep_id``.
        """
        self._need_revision("claim")
        if not isinstance(worker, str) or not worker:
            raise CpPlanError(f"claim: worker must be a non-empty id (host:pid), not {worker!r}")
        if not (isinstance(lease_s, (int, float)) and math.isfinite(lease_s) and lease_s > 0):
            raise CpPlanError(f"claim: lease_s={lease_s!r} must be a positive number of seconds, e.g. 300")
        if not (isinstance(max_attempts, int) and max_attempts >= 1):
            raise CpPlanError(f"claim: max_attempts={max_attempts!r} must be an integer >= 1")
        scope = self._scope(config_hashes, sweep_id)
        c = runs_table.c
        for attempt in range(50):
            with self._tx(write=True) as conn:
                now = _now()
                finished = set(conn.execute(sa.select(c.config_hash).where(
                    scope, c.status.in_(("done", "diverged")))).scalars())
                rows = conn.execute(sa.select(c.run_id, c.status, c.worker, c.lease_expires_at, c.updated_at,
                                              c.attempts, c.config_hash)
                                    .where(scope, c.status.in_(("pending", "running", "failed")))
                                    .order_by(c.seq, c.run_id)).all()
                stale = {r.run_id for r in rows if _is_stale(r.status, r.worker, r.lease_expires_at, r.updated_at, now)}
                busy = {r.config_hash for r in rows if r.status == "running" and r.run_id not in stale}
                chosen = None
                for r in rows:
                    if r.config_hash in finished or r.config_hash in busy:
                        continue
                    state = queue_state(r.status, r.attempts, r.run_id in stale, max_attempts)
                    if state == "abandoned":
                        conn.execute(sa.update(runs_table).where(
                            c.run_id == r.run_id, c.status == "running", c.worker == r.worker).values(
                            status="failed", lease_expires_at=None, updated_at=now, rev=c.rev + 1,
                            reason=f"abandoned by worker {r.worker} (lease expired or process gone) on "
                                   f"attempt {r.attempts or 0} of {max_attempts}; not retried again"))
                        continue
                    if state == "claimable":
                        chosen = r
                        break
                if chosen is None:
                    return None
                res = conn.execute(sa.update(runs_table).where(
                    c.run_id == chosen.run_id, c.status == chosen.status,
                    c.worker.is_not_distinct_from(chosen.worker),
                    c.lease_expires_at.is_not_distinct_from(chosen.lease_expires_at)).values(
                    status="running", worker=worker, lease_expires_at=_iso_in(lease_s),
                    attempts=(chosen.attempts or 0) + 1, updated_at=now, rev=c.rev + 1))
                won = res.rowcount == 1
            if won:
                return self.get_run(chosen.run_id)
            time.sleep(0.01 * (1 + attempt % 5))  # PostgreSQL: another worker took it first; look again
        raise CpPlanError(f"claim: gave up after 50 conflicting attempts in {self.display}; retry")

    def renew(self, run_id: str, worker: str, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Extend ``worker``'s lease on a claimed run to now + ``lease_s``; False when the worker
        no longer holds it (then it must stop training it). Not a change to the run's data: the
        fingerprint stays the same."""
        with self._tx(write=True) as conn:
            res = conn.execute(sa.update(runs_table).where(
                runs_table.c.run_id == run_id, runs_table.c.worker == worker, runs_table.c.status == "running")
                .values(lease_expires_at=_iso_in(lease_s)))
            return res.rowcount == 1

    def queue_status(self, *, config_hashes=None, sweep_id: str | None = None,
                     max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> dict[str, dict]:
        """Where each config of a sweep stands, by config hash: ``state`` is 'done', 'diverged',
        'running' (a live worker has it), 'pending' (claimable now or after a lease expires) or
        'failed' (attempts used up), with the run_id, loss and reason of the deciding row."""
        scope = self._scope(config_hashes, sweep_id)
        c = runs_table.c
        with self._tx() as conn:
            now = _now()
            rows = conn.execute(sa.select(c.run_id, c.status, c.worker, c.lease_expires_at, c.updated_at,
                                          c.attempts, c.config_hash, c.loss, c.reason)
                                .where(scope).order_by(c.seq.desc(), c.run_id.desc())).all()
        rank = {"done": 0, "diverged": 1, "running": 2, "pending": 3, "failed": 4}
        out: dict[str, dict] = {}
        for r in rows:
            tries = r.attempts or 0
            stale = _is_stale(r.status, r.worker, r.lease_expires_at, r.updated_at, now)
            state = queue_state(r.status, tries, stale, max_attempts)
            state = {"claimable": "pending", "abandoned": "failed"}.get(state, state)
            prev = out.get(r.config_hash)
            if prev is None or rank[state] < rank[prev["state"]]:
                out[r.config_hash] = {"state": state, "run_id": r.run_id, "loss": r.loss, "reason": r.reason,
                                      "attempts": tries}
        return out

    def add_coord_rows(self, rows: list[dict]) -> None:
        """Store coordinate-check rows (one per parameterization, shape and step)."""
        clean_rows = []
        now = _now()
        for r in rows:
            clean = _coerce_fields(r, COORD_COLUMN_KINDS, "add_coord_rows", COORD_BOUNDS)
            missing = [c for c in COORD_REQUIRED if clean.get(c) is None]
            if missing:
                raise CpPlanError(f"add_coord_rows: row {r!r} lacks {', '.join(missing)}")
            if clean["axis"] not in COORD_AXES:
                raise CpPlanError(f"add_coord_rows: axis {clean['axis']!r} is not one of {', '.join(COORD_AXES)}")
            clean_rows.append({**dict.fromkeys(COORD_COLUMN_KINDS), **clean, "created_at": clean.get("created_at") or now})
        if clean_rows:
            with self._tx(write=True) as conn:
                conn.execute(sa.insert(coord_table), clean_rows)

    # ------------------------------------------------------------ import

    def import_frame(self, df: pd.DataFrame, source: str) -> int:
        """Validate a table of published runs and insert all its rows in one transaction, or
        none (see :func:`planner.tableio.prepare_import`). Returns the number imported."""
        return self.import_plan(prepare_import(df, source, now=_now()))

    def import_plan(self, plan: ImportPlan, chunk_rows: int = 5000) -> int:
        """Insert validated rows in one transaction, ``chunk_rows`` at a time (memory stays
        bounded for any table size); any run_id already present refuses all."""
        missing = set(RUN_COLUMNS) - self._run_cols
        if missing and any(c in plan.columns and any(v is not None and v == v for v in plan.columns[c])
                           for c in missing):
            self._need_revision("import")
        now = _now()
        ids = plan.run_ids
        try:
            with self._tx(write=True) as conn:
                taken = []
                for i in range(0, len(ids), 500):
                    taken += conn.execute(sa.select(runs_table.c.run_id)
                                          .where(runs_table.c.run_id.in_(ids[i:i + 500]))).scalars().all()
                if taken:
                    first = sorted(taken)[0]
                    raise CpPlanError(
                        f"refusing to import: {len(taken)} run_id(s) already in {self.display}, e.g. "
                        f"{first!r} (row {ids.index(first) + 1}); nothing was imported. "
                        "Was this table imported before? Use another --source, or give the rows new run_ids")
                seq = conn.execute(_next_seq()).scalar()
                template = {**dict.fromkeys(RUN_COLUMNS), "extra_json": None, "rev": 0}
                for chunk in plan.chunks(chunk_rows):
                    rows = []
                    for r in chunk:
                        row = {**template, **r, "seq": seq}
                        seq += 1
                        row["created_at"] = row["created_at"] or now
                        row["updated_at"] = row["updated_at"] or now
                        if missing:
                            for c in missing:
                                row.pop(c, None)
                        rows.append(row)
                    conn.execute(sa.insert(runs_table), rows)
        except sa.exc.IntegrityError as exc:  # a concurrent writer took an id after our check
            raise CpPlanError(f"refusing to import: a run_id collided with a concurrent write "
                              f"({str(exc.orig).splitlines()[0]}); nothing was imported, retry") from None
        return plan.n_rows

    # ------------------------------------------------------------ reading

    def find_done(self, config_hash: str) -> str | None:
        """The run_id of the latest 'done' run with this config hash, else None (sweep resume)."""
        with self._tx() as conn:
            return conn.execute(
                sa.select(runs_table.c.run_id)
                .where(runs_table.c.config_hash == config_hash, runs_table.c.status == "done")
                .order_by(runs_table.c.updated_at.desc()).limit(1)).scalar()

    def runs(self, where: dict | list | None = None,
             statuses: tuple[str, ...] | list[str] | str | None = ("done",),
             limit: int | None = None) -> pd.DataFrame:
        """Runs as a DataFrame: canonical columns, then the extra run columns, then any columns
        imported tables brought along. Float columns are float64; integer columns int64, or
        float64 with NaN when some runs lack them. ``where`` maps a column to a value (strings
        are parsed for numeric columns), a list of values, or None (missing); or it is a list of
        ``(column, op, value)`` terms (:func:`planner.tableio.parse_where`, op one of
        ``WHERE_OPERATORS``): equalities on one column mean either, every other term must hold,
        and a missing value matches no comparison. Terms on stored run columns are part of the
        SQL query; those on imported extras filter after it.
        ``statuses=None`` returns every status; ``limit`` keeps only the last N matching runs
        (in the query itself, so a large database is not read whole)."""
        q = self._runs_select()
        if statuses is not None:
            statuses = (statuses,) if isinstance(statuses, str) else tuple(statuses)
            unknown = [s for s in statuses if s not in STATUSES]
            if unknown:
                raise CpPlanError(f"status {unknown[0]!r} is not one of {', '.join(STATUSES)}")
            q = q.where(runs_table.c.status.in_(statuses))
        post: dict[str, list] = {}  # extra column -> [(op, value)]
        for col, terms in _where_terms(where).items():
            if col not in RUN_COLUMN_KINDS:
                post[col] = terms
                continue
            kind, c = RUN_COLUMN_KINDS[col], runs_table.c[col]
            either, every = [], []
            for op, v in terms:
                if v is not None and kind != TEXT:
                    try:
                        v = _parse_number(v, kind)
                    except (TypeError, ValueError, OverflowError):
                        raise CpPlanError(f"where {col}{op}{v!r}: {col} is numeric; give a number, "
                                          f"e.g. {col}{op}1e6") from None
                    if isinstance(v, int) and abs(v) >= 2 ** 63:  # beyond SQLite's integers: compare as a float
                        v = float(v)
                elif v is not None:
                    v = str(v)
                if op == "=":
                    either.append(c.is_(None) if v is None else c == v)
                else:
                    every.append(c.is_not(None) if v is None else _SQL_OPS[op](c, v))
            if either:
                q = q.where(sa.or_(*either))
            for cond in every:
                q = q.where(cond)
        if limit is not None and limit < 0:
            raise CpPlanError(f"limit={limit} must be >= 0 (0 or None: all runs)")
        if limit and not post:  # columns kept in extra_json filter after the query: limit after them
            q = q.order_by(runs_table.c.seq.desc(), runs_table.c.run_id.desc()).limit(limit)
            with self._tx() as conn:
                df = _read_runs_frame(conn.execute(q), reverse=True, display=self.display)
        else:
            q = q.order_by(runs_table.c.seq, runs_table.c.run_id)
            with self._tx() as conn:
                df = _read_runs_frame(conn.execute(q), display=self.display)
        for col, terms in post.items():
            if col not in df.columns:
                raise CpPlanError(f"unknown column {col!r}; run columns are {', '.join(RUN_COLUMNS)}"
                                  + (f", plus imported {', '.join(c for c in df.columns if c not in RUN_COLUMN_KINDS)}"
                                     if len(df.columns) > len(RUN_COLUMNS) else ""))
            df = df[_extra_mask(df[col], terms)].reset_index(drop=True)
        if limit and post:
            df = df.tail(limit).reset_index(drop=True)
        return df

    def _resolve_id(self, conn, run_id: str) -> str:
        if conn.execute(sa.select(runs_table.c.run_id).where(runs_table.c.run_id == run_id)).first():
            return run_id
        matches = conn.execute(sa.select(runs_table.c.run_id)
                               .where(runs_table.c.run_id.startswith(run_id, autoescape=True)).limit(3)).scalars().all()
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise CpPlanError(f"no run {run_id!r} in {self.display}; `cp-plan runs list` shows the ids")
        raise CpPlanError(f"run id prefix {run_id!r} is ambiguous ({', '.join(matches[:2])}, ...); give more characters")

    def get_run(self, run_id: str) -> dict:
        """One run as a dict: every column, imported extras, and ``config`` (the parsed
        config_json, or None). A unique prefix of the run_id is enough."""
        with self._tx() as conn:
            rid = self._resolve_id(conn, run_id)
            row = dict(conn.execute(self._runs_select().where(runs_table.c.run_id == rid)).mappings().one())
        row.pop("rev")
        row.pop("seq")
        extra = stored_json(row.pop("extra_json"), "extra_json", rid, self.display) or {}
        if not isinstance(extra, dict):
            raise damaged(self.display, f"run {rid!r} has extra_json {_short(extra)}, not a JSON object")
        out = {c: row.get(c) for c in RUN_COLUMNS}
        out.update(extra)
        out["config"] = stored_json(row["config_json"], "config_json", rid, self.display)
        return out

    def curve(self, run_id: str) -> pd.DataFrame:
        """A run's loss curve, one row per logged step, in step order."""
        with self._tx() as conn:
            rid = self._resolve_id(conn, run_id)
            rows = conn.execute(sa.select(curves_table).where(curves_table.c.run_id == rid)
                                .order_by(curves_table.c.step)).mappings().all()
        return _typed_frame(rows, CURVE_COLUMN_KINDS)

    def coord_rows(self, where: dict | None = None) -> pd.DataFrame:
        """Coordinate-check rows, in insertion order; ``where`` maps columns to values."""
        q = sa.select(*[coord_table.c[c] for c in COORD_COLUMN_KINDS])
        for col, value in (where or {}).items():
            if col not in COORD_COLUMN_KINDS:
                raise CpPlanError(f"unknown coordinate-check column {col!r}; known: {', '.join(COORD_COLUMN_KINDS)}")
            values = list(value) if isinstance(value, (list, tuple, set)) else [value]
            q = q.where(coord_table.c[col].in_(values))
        with self._tx() as conn:
            rows = conn.execute(q.order_by(coord_table.c.id)).mappings().all()
        return _typed_frame(rows, COORD_COLUMN_KINDS)

    def count(self, statuses: tuple[str, ...] | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(runs_table)
        if statuses is not None:
            q = q.where(runs_table.c.status.in_(statuses))
        with self._tx() as conn:
            return int(conn.execute(q).scalar())

    def fingerprint(self) -> str:
        """A short hash that changes whenever any run is inserted or updated (the law cache
        key): database id, row count, sum of per-row revision counters, latest update time."""
        with self._tx() as conn:
            n, revs, last = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(runs_table.c.rev), 0),
                                                   sa.func.max(runs_table.c.updated_at))).one()
            db_id = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "db_id")).scalar()
        return hashlib.sha256(f"{db_id}|{n}|{revs}|{last}".encode()).hexdigest()[:16]


def _next_seq() -> sa.Select:
    return sa.select(sa.func.coalesce(sa.func.max(runs_table.c.seq), 0) + 1)


def _postgres_driver() -> str:
    """``postgresql://`` means psycopg 3 when installed (SQLAlchemy's own default is psycopg2)."""
    import importlib.util

    if importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg"
    if importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2"
    raise CpPlanError("a postgresql:// run database needs a driver; pip install 'psycopg[binary]'")


def _parse_number(v: Any, kind: str) -> float | int:
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(f"{v!r} is not finite")
    return int(x) if kind == INT and x.is_integer() else x


_SQL_OPS = {"!=": lambda c, v: c != v, "<": lambda c, v: c < v, "<=": lambda c, v: c <= v,
            ">": lambda c, v: c > v, ">=": lambda c, v: c >= v}
_PD_OPS = {"=": lambda s, v: s == v, **_SQL_OPS}


def _where_terms(where) -> dict[str, list[tuple[str, Any]]]:
    """``RunDB.runs``'s ``where`` (a dict of equalities, or (column, op, value) terms) grouped by
    column: {column: [(op, value), ...]}, value None meaning missing."""
    out: dict[str, list[tuple[str, Any]]] = {}
    if isinstance(where, dict):
        for col, value in where.items():
            for v in (list(value) if isinstance(value, (list, tuple, set)) else [value]):
                out.setdefault(col, []).append(("=", None if v is None or v == "null" else v))
        return out
    for term in where or ():
        col, op, v = term
        if op not in WHERE_OPERATORS:
            raise CpPlanError(f"where {col}{op}{v}: operator {op!r} is not one of {', '.join(WHERE_OPERATORS)}")
        if v is None and op not in ("=", "!="):
            raise CpPlanError(f"where {col}{op}null: null (missing) goes with = or != only")
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:  # a byte the terminal could not decode (surrogate-escaped)
                raise CpPlanError(f"where {col}{op}{v.encode('utf-8', 'surrogateescape')!r}: the value is not "
                                  "UTF-8 text; type it in UTF-8") from None
        out.setdefault(col, []).append((op, v))
    return out


def _extra_mask(s: pd.Series, terms: list[tuple[str, Any]]):
    """Rows of an imported extra column that satisfy ``terms`` (as in ``RunDB.runs``): numbers
    compare as numbers where both sides are numeric, otherwise as text."""
    num = pd.to_numeric(s, errors="coerce")
    text = s.astype(str)
    present = s.notna()

    def test(op: str, v):
        if v is None:
            return ~present if op == "=" else present
        try:
            x = float(v)
        except (TypeError, ValueError):
            x = None
        by_text = present & _PD_OPS[op](text, str(v))
        if x is None or not math.isfinite(x):
            return by_text
        by_num = num.notna() & _PD_OPS[op](num, x)
        # a cell that is not a number (text in a mostly numeric column) compares as text
        return by_num | (present & num.isna() & by_text) if op != "=" else by_num | by_text

    either = [test(op, v) for op, v in terms if op == "="]
    mask = pd.Series(True, index=s.index)
    if either:
        mask &= pd.concat(either, axis=1).any(axis=1)
    for op, v in terms:
        if op != "=":
            mask &= test(op, v)
    return mask.to_numpy(dtype=bool)


def _typed_frame(rows, kinds: dict[str, str], columns: list[str] | None = None) -> pd.DataFrame:
    columns = columns or list(kinds)
    df = pd.DataFrame.from_records([dict(r) for r in rows], columns=columns)
    for c in columns:
        kind = kinds.get(c)
        if kind == FLOAT or (kind == INT and df[c].isna().any()):
            df[c] = pd.to_numeric(df[c]).astype("float64")
        elif kind == INT:
            df[c] = df[c].astype("int64")
    return df


READ_CHUNK_ROWS = 50_000  # rows fetched and converted at a time by RunDB.runs


def damaged(display: str | None, what: str, fix: str = "fix or delete that row by hand (sqlite3)") -> CpPlanError:
    """The error for a database whose stored values cp-plan never writes (edited by hand, or damaged)."""
    where = f"run database {display}" if display else "the run database"
    return CpPlanError(f"{where} is damaged: {what}; {fix}, or restore a copy (`cp-plan runs snapshot` makes "
                       "consistent ones)")


def _short(value: Any, limit: int = 60) -> str:
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
        raise damaged(display, f"run {run_id!r} has {column} {_short(text)}, not JSON ({exc})") from None


def _read_runs_frame(result, reverse: bool = False, chunk_rows: int | None = None,
                     display: str = "the run database") -> pd.DataFrame:
    """The runs of a query result as RunDB.runs's frame, built column by column: rows are fetched
    ``chunk_rows`` at a time and each chunk becomes one typed array per column, so a million runs
    cost their arrays, not a million dicts (5.4 GB before, for the 1M-row fit of
    bench/scale_bench.py). Columns: RUN_COLUMNS in order (FLOAT float64; INT int64, or float64
    with NaN when some runs lack it; TEXT object with None), then the imported extras in order of
    first appearance. ``reverse`` turns the row order around (a descending LIMIT query)."""
    chunk_rows = chunk_rows or READ_CHUNK_ROWS
    names = list(result.keys())
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names if name not in ("rev", "seq", "extra_json")}
    extra_rows: list[int] = []
    extra_dicts: list[dict] = []
    n = 0
    while True:
        chunk = result.fetchmany(chunk_rows)
        if not chunk:
            break
        ids = [row[names.index("run_id")] for row in chunk] if "run_id" in names else [None] * len(chunk)
        for name, values in zip(names, zip(*chunk)):
            if name in parts:
                parts[name].append(_column_chunk(RUN_COLUMN_KINDS[name], values, name, ids, display))
            elif name == "extra_json":
                for i, text in enumerate(values):
                    if text:
                        extra = stored_json(text, "extra_json", ids[i], display)
                        if extra is not None and not isinstance(extra, dict):
                            raise damaged(display, f"run {ids[i]!r} has extra_json {_short(extra)}, "
                                                   "not a JSON object")
                        if extra:
                            extra_rows.append(n + i)
                            extra_dicts.append(extra)
        n += len(chunk)
    data = {}
    for name in RUN_COLUMNS:
        kind = RUN_COLUMN_KINDS[name]
        if name not in parts:  # a column an older schema revision lacks: all missing
            data[name] = np.full(n, np.nan) if kind != TEXT else np.full(n, np.nan, dtype=object)
        elif not parts[name]:
            data[name] = np.empty(0, dtype={FLOAT: np.float64, INT: np.int64, TEXT: object}[kind])
        else:
            data[name] = np.concatenate(parts[name]) if len(parts[name]) > 1 else parts[name][0]
        if reverse:
            data[name] = data[name][::-1]
    parts.clear()
    df = pd.DataFrame(data, columns=list(RUN_COLUMNS), copy=False)
    if extra_dicts:
        order: dict[str, None] = {}
        for e in extra_dicts:
            order.update(dict.fromkeys(e))
        rows = np.asarray(extra_rows)
        ex = pd.DataFrame.from_records(extra_dicts, columns=list(order), index=(n - 1 - rows) if reverse else rows)
        ex = ex.sort_index() if reverse else ex
        if len(ex) < n:
            ex = ex.reindex(range(n))
        df = pd.concat([df, ex.reset_index(drop=True)], axis=1)
    return df


def _column_chunk(kind: str, values: tuple, name: str = "?", ids: list | None = None,
                  display: str = "the run database") -> np.ndarray:
    """One chunk of a stored column as a typed array: float64 (None → NaN) for FLOAT, int64 for
    INT (float64 with NaN if the chunk has a missing value), object for TEXT. A value of the
    wrong type (text or bytes in a number column, an integer beyond 64 bits) is a damaged
    database, named by its run and column."""
    try:
        return _typed_chunk(kind, values)
    except (TypeError, ValueError, OverflowError):
        for i, v in enumerate(values):
            try:
                _typed_chunk(kind, (v,))
            except (TypeError, ValueError, OverflowError):
                rid = ids[i] if ids else None
                raise damaged(display, f"run {rid!r} has {name} = {_short(v)}, not a "
                                       f"{'number' if kind == FLOAT else 'whole number'}") from None
        raise


def _typed_chunk(kind: str, values: tuple) -> np.ndarray:
    if kind == FLOAT:
        return np.array(values, dtype=np.float64)
    if kind == INT:
        if None in values:
            return np.array(values, dtype=np.float64)
        return np.array(values, dtype=np.int64)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def curve_summary(curve: pd.DataFrame) -> dict:
    """What `runs show` reports about a loss curve: its extent, last and best validation loss."""
    out: dict[str, Any] = {"n_points": int(len(curve))}
    if len(curve) == 0:
        return out
    out.update(first_step=int(curve["step"].iloc[0]), last_step=int(curve["step"].iloc[-1]))
    for col in ("n_tokens", "train_loss", "val_loss", "lr"):
        s = curve[col].dropna()
        out[f"last_{col}"] = float(s.iloc[-1]) if len(s) else None
    val = curve.dropna(subset=["val_loss"])
    if len(val):
        best = val["val_loss"].idxmin()
        out.update(min_val_loss=float(val.loc[best, "val_loss"]), min_val_loss_step=int(val.loc[best, "step"]))
    return out
