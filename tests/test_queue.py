"""The sweep queue in the run database: schema revision 2, enqueue, claim, lease, fencing.

Torch-free: "training" here is a few database writes, so that many worker processes can race
on the queue in a second. Backend-neutral tests also run against PostgreSQL (conftest.py).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from planner import db as dbmod
from planner.db import LeaseLost, RunDB, local_worker_id
from planner.errors import CpPlanError

CONFIG = {"parameterization": "completep", "n_embd": 32, "n_layer": 2, "d_head": 16, "lr": 1e-2,
          "n_tokens": 10_240, "batch_size": 8, "seq_len": 32, "seed": 0}
OTHER_HOST = "some-other-host:4242"  # a worker whose process this host cannot see


def cfg(i: int) -> tuple[dict, str]:
    c = {**CONFIG, "seed": i}
    return c, f"hash-{i:03d}"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    return str(tmp_path / "q.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ schema revision


def test_new_database_is_at_current_revision(tmp_path):
    path = tmp_path / "r.sqlite"
    RunDB(path).close()
    with sqlite3.connect(path) as con:
        meta = dict(con.execute("SELECT key, value FROM meta"))
        cols = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
        indexes = {r[1] for r in con.execute("PRAGMA index_list(runs)")}
    assert meta["schema_version"] == "1" and meta["schema_revision"] == str(dbmod.SCHEMA_REVISION) == "2"
    assert "attempts" in cols and "runs_sweep_id" in indexes


def _make_revision_1(path: Path) -> None:
    """A database exactly as the first cp-plan (schema v1, no revision) wrote it."""
    rdb = RunDB(path)
    rid = rdb.start_run(CONFIG, "old-hash", n_params=24_832)
    rdb.finish_run(rid, "done", loss=3.2)
    rdb.close()
    with sqlite3.connect(path) as con:
        con.execute("DROP INDEX runs_sweep_id")
        con.execute("ALTER TABLE runs DROP COLUMN attempts")
        con.execute("DELETE FROM meta WHERE key = 'schema_revision'")
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_revision_1_database_read_only_is_untouched_and_readable(tmp_path):
    path = tmp_path / "old.sqlite"
    _make_revision_1(path)
    before = _sha(path)
    rdb = RunDB(path, create=False)
    assert rdb.schema_revision == 1
    df = rdb.runs()
    assert len(df) == 1 and df["loss"].iloc[0] == 3.2 and df["attempts"].isna().all()
    run = rdb.get_run(df["run_id"].iloc[0])
    assert run["attempts"] is None and run["n_params"] == 24_832
    with pytest.raises(CpPlanError, match="schema revision 1, opened read-only; open it for writing"):
        rdb.claim("w:1", config_hashes=["old-hash"])
    rdb.close()
    assert _sha(path) == before  # reading never migrates: the file (e.g. git-tracked) stays byte-identical


def test_revision_1_database_is_upgraded_on_write_and_old_code_keeps_working(tmp_path):
    path = tmp_path / "old.sqlite"
    _make_revision_1(path)
    fp = RunDB(path, create=False).fingerprint()
    rdb = RunDB(path)  # writing: revision 2 is applied in one transaction
    assert rdb.schema_revision == 2 and rdb.fingerprint() == fp and rdb.count() == 1
    with sqlite3.connect(path) as con:
        meta = dict(con.execute("SELECT key, value FROM meta"))
        cols = [r[1] for r in con.execute("PRAGMA table_info(runs)")]
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # An older cp-plan checks only schema_version and names its columns in every statement:
        # it still opens, inserts, updates and reads the upgraded database.
        assert meta["schema_version"] == "1" and meta["schema_revision"] == "2"
        old_cols = [c for c in cols if c != "attempts"]
        con.execute(f"INSERT INTO runs ({', '.join(old_cols)}) VALUES ({', '.join('?' * len(old_cols))})",
                    [{"run_id": "legacy", "status": "running", "source": "trained", "created_at": "x",
                      "updated_at": "x", "rev": 0, "seq": 99}.get(c) for c in old_cols])
        con.execute("UPDATE runs SET status='done', loss=3.0 WHERE run_id='legacy'")
        assert con.execute(f"SELECT {', '.join(old_cols)} FROM runs").fetchall()[-1][0] == "legacy"
    assert RunDB(path).get_run("legacy")["attempts"] is None  # and the new code reads the old code's rows
    # a second writer finds it upgraded already
    assert RunDB(path).schema_revision == 2


def test_upgrade_on_either_backend(url):
    """Revision 1 → 2 through SQLAlchemy, on SQLite and PostgreSQL alike."""
    import sqlalchemy as sa

    rdb = RunDB(url)
    rid = rdb.start_run(CONFIG, "h")
    rdb.finish_run(rid, "failed", reason="out of memory")
    engine = rdb.engine
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX runs_sweep_id"))
        conn.execute(sa.text("ALTER TABLE runs DROP COLUMN attempts"))
        conn.execute(sa.text("DELETE FROM meta WHERE key = 'schema_revision'"))
    rdb.close()
    assert RunDB(url, create=False).get_run(rid)["attempts"] is None
    up = RunDB(url)
    assert up.schema_revision == 2 and up.enqueue(CONFIG, "h") == (rid, "queued")
    assert up.claim("w:1", 60, config_hashes=["h"])["attempts"] == 1


# ------------------------------------------------------------------ enqueue and claim


def test_enqueue_claim_finish_and_skip(url):
    rdb = RunDB(url)
    ids = [rdb.enqueue(*cfg(i), sweep="shape", sweep_id="s1") for i in range(3)]
    assert [s for _, s in ids] == ["queued"] * 3
    assert rdb.enqueue(*cfg(0), sweep="shape", sweep_id="s1") == (ids[0][0], "queued")  # same row, not a new one
    assert rdb.count() == 3 and set(rdb.runs(statuses=None)["status"]) == {"pending"}
    hashes = [cfg(i)[1] for i in range(3)]
    run = rdb.claim("w:1", 60, config_hashes=hashes)
    assert run["run_id"] == ids[0][0] and run["status"] == "running" and run["attempts"] == 1
    assert run["worker"] == "w:1" and run["lease_expires_at"] > dbmod.now_iso() and run["config"] == cfg(0)[0]
    # a live lease: enqueueing the config again leaves it to its worker
    assert rdb.enqueue(*cfg(0)) == (ids[0][0], "held")
    rdb.finish_run(run["run_id"], "done", loss=3.0, lease_holder="w:1")
    assert rdb.get_run(run["run_id"])["lease_expires_at"] is None
    assert rdb.enqueue(*cfg(0)) == (ids[0][0], "skipped")
    by_sweep = rdb.claim("w:2", 60, sweep_id="s1")
    assert by_sweep["run_id"] == ids[1][0]
    status = rdb.queue_status(config_hashes=hashes)
    assert [status[h]["state"] for h in hashes] == ["done", "running", "pending"]
    assert status[hashes[0]]["loss"] == 3.0
    with pytest.raises(CpPlanError, match="exactly one of config_hashes"):
        rdb.claim("w:1", 60)
    with pytest.raises(CpPlanError, match="lease_s=0 must be a positive"):
        rdb.claim("w:1", 0, sweep_id="s1")


def test_expired_lease_is_reclaimed_and_the_old_worker_is_fenced(url):
    rdb = RunDB(url)
    rid, _ = rdb.enqueue(*cfg(0))
    first = rdb.claim(OTHER_HOST, 0.3, config_hashes=["hash-000"])
    assert rdb.claim("w:2", 60, config_hashes=["hash-000"]) is None  # lease still live
    assert rdb.renew(rid, OTHER_HOST, 0.3)
    time.sleep(0.4)
    second = rdb.claim("w:2", 60, config_hashes=["hash-000"])
    assert second["run_id"] == first["run_id"] == rid and second["attempts"] == 2 and second["worker"] == "w:2"
    fp = rdb.fingerprint()
    assert not rdb.renew(rid, OTHER_HOST, 60)
    with pytest.raises(LeaseLost, match=f"worker {OTHER_HOST} lost its claim on run '{rid}'"):
        rdb.finish_run(rid, "done", loss=9.9, lease_holder=OTHER_HOST)
    with pytest.raises(LeaseLost):
        rdb.add_curve(rid, [{"step": 1, "train_loss": 9.9}], lease_holder=OTHER_HOST)
    with pytest.raises(LeaseLost):
        rdb.update_run(rid, step=5, lease_holder=OTHER_HOST)
    assert rdb.fingerprint() == fp and len(rdb.curve(rid)) == 0  # the fenced writes changed nothing
    assert rdb.renew(rid, "w:2", 60) and rdb.fingerprint() == fp  # renewing is not a data change
    rdb.finish_run(rid, "done", loss=3.1, lease_holder="w:2")
    assert rdb.get_run(rid)["loss"] == 3.1


def test_abandoned_run_uses_up_its_attempts(url):
    rdb = RunDB(url)
    rid, _ = rdb.enqueue(*cfg(0))
    for n in (1, 2):
        assert rdb.claim(OTHER_HOST, 0.05, config_hashes=["hash-000"])["attempts"] == n
        time.sleep(0.1)
    assert rdb.claim("w:3", 60, config_hashes=["hash-000"]) is None
    run = rdb.get_run(rid)
    assert run["status"] == "failed" and "attempt 2 of 2; not retried again" in run["reason"]
    assert rdb.queue_status(config_hashes=["hash-000"])["hash-000"]["state"] == "failed"
    # a new sweep over the same config queues it again, in the same row
    assert rdb.enqueue(*cfg(0)) == (rid, "queued") and rdb.get_run(rid)["attempts"] == 0


def test_failed_run_is_retried_once(url):
    rdb = RunDB(url)
    rid, _ = rdb.enqueue(*cfg(0))
    for n in (1, 2):
        run = rdb.claim("w:1", 60, config_hashes=["hash-000"])
        assert run["run_id"] == rid and run["attempts"] == n
        rdb.finish_run(rid, "failed", reason=f"boom {n}", lease_holder="w:1")
    assert rdb.claim("w:1", 60, config_hashes=["hash-000"]) is None
    st = rdb.queue_status(config_hashes=["hash-000"])["hash-000"]
    assert st["state"] == "failed" and st["reason"] == "boom 2" and rdb.count() == 1


def test_diverged_is_never_retried(url):
    rdb = RunDB(url)
    rid, _ = rdb.enqueue(*cfg(0))
    rdb.claim("w:1", 60, config_hashes=["hash-000"])
    rdb.finish_run(rid, "diverged", reason="nan", lease_holder="w:1")
    assert rdb.claim("w:1", 60, config_hashes=["hash-000"]) is None
    assert rdb.enqueue(*cfg(0)) == (rid, "skipped")


def test_dead_local_worker_is_reclaimed_at_once(tmp_path):
    rdb = RunDB(tmp_path / "q.sqlite")
    rid, _ = rdb.enqueue(*cfg(0))
    dead = f"{socket.gethostname()}:{_dead_pid()}"
    rdb.claim(dead, 3600, config_hashes=["hash-000"])  # an hour's lease, but its process is gone
    run = rdb.claim(local_worker_id(), 60, config_hashes=["hash-000"])
    assert run["run_id"] == rid and run["attempts"] == 2
    # a running row without a lease (cp-plan train) whose process is gone is queued again too
    rid2 = rdb.start_run(cfg(1)[0], "hash-001", worker=dead)
    assert rdb.enqueue(*cfg(1)) == (rid2, "queued")
    live = rdb.start_run(cfg(2)[0], "hash-002")  # this process: alive, so it is left alone
    assert rdb.enqueue(*cfg(2)) == (live, "held")


# ------------------------------------------------------------------ many workers


def _claim_worker(url: str, hashes: list[str], out: str) -> None:
    rdb = RunDB(url)
    me = local_worker_id()
    claimed = []
    while (run := rdb.claim(me, 30, config_hashes=hashes)) is not None:
        claimed.append(run["run_id"])
        rdb.add_curve(run["run_id"], [{"step": 1, "train_loss": 4.0}], lease_holder=me)
        rdb.finish_run(run["run_id"], "done", loss=3.0, lease_holder=me)
    Path(out).write_text("\n".join(claimed))


def test_many_workers_never_train_the_same_run(url, tmp_path):
    rdb = RunDB(url)
    hashes = [cfg(i)[1] for i in range(40)]
    for i in range(40):
        rdb.enqueue(*cfg(i), sweep_id="race")
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    outs = [str(tmp_path / f"w{k}.txt") for k in range(8)]
    procs = [ctx.Process(target=_claim_worker, args=(url, hashes, o)) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 8
    claims = [line for o in outs for line in Path(o).read_text().split("\n") if line]
    df = rdb.runs(statuses=None)
    assert len(claims) == 40 and len(set(claims)) == 40  # each run claimed by exactly one worker
    assert len(df) == 40 and (df["status"] == "done").all() and (df["attempts"] == 1).all()
    assert sum(1 for o in outs if Path(o).read_text()) >= 2  # the work really was shared


def test_ci_runs_exactly_the_readme_test_command():
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    block = readme.split("## Set up and test", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0].strip()
    ci_lines = [line.strip() for line in (root / ".ci" / "run").read_text().splitlines()]
    assert block.startswith("python3 -m venv") and block in ci_lines
    assert ci_lines[-1] == block  # the last thing CI does, so its exit status is CI's


# ------------------------------------------------------------------ worker plumbing (no torch)


def test_fenced_db_stops_a_worker_that_lost_its_lease(tmp_path):
    from trainer.cluster import FencedDB, Heartbeat

    rdb = RunDB(tmp_path / "q.sqlite")
    rid, _ = rdb.enqueue(*cfg(0))
    other, _ = rdb.enqueue(*cfg(1))
    me = local_worker_id()
    rdb.claim(me, 60, config_hashes=["hash-000"])
    with Heartbeat(rdb, rid, me, 0.2) as hb:
        fenced = FencedDB(rdb, rid, me, 0.2, hb)
        fenced.update_run(rid, step=3)  # holds the lease: written, and the lease moves forward
        assert rdb.get_run(rid)["step"] == 3 and rdb.get_run(rid)["lease_expires_at"] > dbmod.now_iso()
        time.sleep(0.3)
        assert not hb.lost  # the heartbeat keeps renewing a short lease
        with rdb.engine.begin() as conn:  # another worker takes the run over
            conn.exec_driver_sql("UPDATE runs SET worker = 'thief:1' WHERE run_id = ?", (rid,))
        deadline = time.monotonic() + 5
        while not hb.lost and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hb.lost
        with pytest.raises(LeaseLost):
            fenced.update_run(rid, step=4)
        with pytest.raises(LeaseLost):
            fenced.finish_run(rid, "done", loss=1.0)
        fenced.update_run(other, step=1)  # other runs are not fenced
    run = rdb.get_run(rid)
    assert run["step"] == 3 and run["status"] == "running" and run["worker"] == "thief:1"


def test_slurm_executor_parameters(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from trainer.cluster import parse_time_min, slurm_executor

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")  # submitit looks for srun
    ex = slurm_executor(tmp_path / "jobs", partition="gpu", time_min=parse_time_min("8:00:00"), gpus_per_node=2,
                        job_name="cp-plan-s")
    assert ex._executor.parameters == {"time": 480, "gpus_per_node": 2, "job_name": "cp-plan-s", "partition": "gpu"}
    assert [parse_time_min(t) for t in ("90", "30:00", "4:00:00", "1-12", "1-12:30", "0:00:30")] == [90, 30, 240, 2160, 2190, 1]
    with pytest.raises(CpPlanError, match="--time 'soon' is not a Slurm time"):
        parse_time_min("soon")


@pytest.mark.parametrize("status, attempts, stale, want", [
    ("done", 1, False, "done"), ("diverged", 2, False, "diverged"),
    ("running", 1, False, "running"), ("running", 1, True, "claimable"), ("running", 2, True, "abandoned"),
    ("failed", 1, False, "claimable"), ("failed", 2, False, "failed"), ("failed", 0, False, "failed"),
    ("pending", 0, False, "claimable"), ("pending", 5, False, "claimable"),
])
def test_queue_state_is_one_pure_decision(status, attempts, stale, want):
    """The one rule enqueue, claim and queue_status decide from (max_attempts 2): a failed run is
    retried once; an abandoned one is re-claimed while attempts are left, then marked failed."""
    from planner.db import queue_state

    assert queue_state(status, attempts, stale, 2) == want
