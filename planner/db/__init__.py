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

The package: ``schema.py`` (tables, versions, migrations, shared definitions), ``store.py`` (engine,
schema check, transactions), ``lifecycle.py`` (a run from start to finish, curves, snapshots),
``queue.py`` (the sweep work queue and its one state rule), ``queries.py`` (reading runs back,
imports) and ``frames.py`` (typed frames); ``rundb.py`` assembles :class:`RunDB` from them.
"""

from planner.db.frames import READ_CHUNK_ROWS, curve_summary
from planner.db.queue import DEFAULT_LEASE_S, DEFAULT_MAX_ATTEMPTS, is_stale, local_worker_id, queue_state
from planner.db.rundb import RunDB
from planner.db.schema import (
    DEFAULT_DB_PATH,
    PROJECT_ROOT,
    SCHEMA_REVISION,
    SCHEMA_VERSION,
    LeaseLost,
    NoDatabase,
    damaged,
    iso_in,
    now_iso,
    stored_json,
)
from planner.db.store import default_db_url
from planner.tableio import CANONICAL_COLUMNS, EXTRA_COLUMNS, RUN_COLUMNS, STATUSES

__all__ = ["RunDB", "default_db_url", "CANONICAL_COLUMNS", "EXTRA_COLUMNS", "RUN_COLUMNS", "STATUSES",
           "SCHEMA_VERSION", "SCHEMA_REVISION", "DEFAULT_DB_PATH", "PROJECT_ROOT", "LeaseLost", "NoDatabase",
           "local_worker_id", "queue_state", "DEFAULT_LEASE_S", "DEFAULT_MAX_ATTEMPTS", "READ_CHUNK_ROWS",
           "curve_summary", "damaged", "stored_json", "iso_in", "now_iso", "is_stale"]
