"""RunStore: the engine, the schema check and one transaction per call, for SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import NullPool, StaticPool

from planner.errors import CpPlanError, mask_secrets
from planner.db.schema import MIGRATIONS, REVISIONS
from planner.tableio import (
    RUN_COLUMNS,
)
from planner.db.schema import now_iso, PG_SCHEMA_LOCK, damaged, DEFAULT_DB_PATH, meta_table, metadata, NoDatabase, runs_table, SCHEMA_REVISION, SCHEMA_VERSION, SQLITE_BUSY_TIMEOUT_S


def default_db_url() -> str:
    """``$CP_PLAN_DB`` if set, else the project's ``data/runs/runs.sqlite`` (as a path)."""
    env = os.environ.get("CP_PLAN_DB", "").strip()
    return env or str(DEFAULT_DB_PATH)


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


def _postgres_driver() -> str:
    """``postgresql://`` means psycopg 3 when installed (SQLAlchemy's own default is psycopg2)."""
    import importlib.util

    if importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg"
    if importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2"
    raise CpPlanError("a postgresql:// run database needs a driver; pip install 'psycopg[binary]'")


class RunStore:
    """The connection, schema and transactions of a run database (SQLite or PostgreSQL)."""

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
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_SCHEMA_LOCK})
            version, revision = read_meta(conn)  # another process may have created it meanwhile
            if version is None:
                metadata.create_all(conn)
                now = now_iso()
                conn.execute(sa.insert(meta_table), [
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                    {"key": "schema_revision", "value": str(SCHEMA_REVISION)},
                    {"key": "db_id", "value": uuid.uuid4().hex},
                    {"key": "created_at", "value": now},
                ])
                version, revision = SCHEMA_VERSION, SCHEMA_REVISION
            while version < SCHEMA_VERSION:
                if version not in MIGRATIONS:
                    raise CpPlanError(f"{self.display}: no migration from schema v{version}; "
                                      "export the runs with an older cp-plan and import them into a new database")
                MIGRATIONS[version](conn)
                version += 1
                conn.execute(sa.update(meta_table).where(meta_table.c.key == "schema_version")
                             .values(value=str(version)))
            if revision < SCHEMA_REVISION:
                for r in range(revision + 1, SCHEMA_REVISION + 1):
                    REVISIONS[r](conn)
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


    def __enter__(self) -> "RunStore":
        return self


    def __exit__(self, *exc) -> None:
        self.close()


    def __repr__(self) -> str:
        return f"RunDB({self.display!r})"
