"""`cp-plan runs snapshot`: a consistent, single-file copy of a SQLite run database that a
sweep still holds open in WAL mode."""

from __future__ import annotations

import socket
import sqlite3

import pytest

from planner.db import RunDB
from planner.errors import CpPlanError


def test_snapshot_of_a_live_wal_database_holds_every_run_and_marks_dead_workers(tmp_path):
    db = RunDB(tmp_path / "runs.sqlite")
    cfg = {"parameterization": "completep", "n_embd": 16, "n_layer": 2, "n_params": 6000.0, "n_tokens": 1e5}
    done = db.start_run(cfg, "h1")
    db.finish_run(done, "done", loss=3.0)
    dead = db.start_run(cfg, "h2", worker=f"{socket.gethostname()}:999999999")  # no such process
    live = db.start_run(cfg, "h3")  # this process: alive
    holder = sqlite3.connect(tmp_path / "runs.sqlite")  # a reader keeps the WAL from being checkpointed
    holder.execute("BEGIN")
    holder.execute("SELECT COUNT(*) FROM runs").fetchone()
    try:
        got = db.snapshot(tmp_path / "ship" / "copy.sqlite")
    finally:
        holder.rollback()
        holder.close()
    copy = tmp_path / "ship" / "copy.sqlite"
    assert not (tmp_path / "ship" / "copy.sqlite-wal").exists()
    with sqlite3.connect(copy) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        rows = dict(con.execute("SELECT run_id, status FROM runs").fetchall())
    assert rows == {done: "done", dead: "failed", live: "failed"}  # nobody trains in the copy
    assert got["of_stopped_workers"] == 1 and got["of_live_workers"] == 1
    with sqlite3.connect(copy) as con:
        reasons = dict(con.execute("SELECT run_id, reason FROM runs WHERE status = 'failed'").fetchall())
    assert "worker had stopped" in reasons[dead] and "still training" in reasons[live]
    assert db.get_run(dead)["status"] == db.get_run(live)["status"] == "running"  # the source is untouched
    with pytest.raises(CpPlanError, match="the database itself"):
        db.snapshot(tmp_path / "runs.sqlite")
    assert not list((tmp_path / "ship").glob(".*tmp"))
