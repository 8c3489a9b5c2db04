"""RunDB: the run database, assembled from its parts."""

from __future__ import annotations

from planner.db.lifecycle import RunLifecycle
from planner.db.queries import RunQueries
from planner.db.queue import RunQueue
from planner.db.store import RunStore


class RunDB(RunLifecycle, RunQueue, RunQueries, RunStore):
    """A run database at a SQLite path or SQLAlchemy URL (see the module docstring).

    ``create=False`` opens an existing database for reading and refuses a missing one, so a
    mistyped ``--db`` does not silently produce an empty result. Create one ``RunDB`` per
    process; after ``fork`` the engine is rebuilt on first use (connections are not shared).
    """

