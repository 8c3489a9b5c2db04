"""Sweeps through the database queue: skip and retry semantics, workers killed with SIGKILL,
a whole sweep killed and restarted, and workers launched by submitit's local executor.

Tiny shapes (N ≤ 32, L ≤ 3, ≤ 60 steps of 8×32 tokens) and one thread per process.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from planner.db import RunDB  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.data import Batches  # noqa: E402
from trainer.sweep import run_sweep, shape_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PARAMS = [("mup", None), ("completep", None)]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def base(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(parameterization="completep", n_embd=16, n_layer=2, d_head=16, base_n_embd=16,
                                 base_n_layer=2, lr=1e-2, seq_len=32, batch_size=8, n_tokens=1024,
                                 eval_every=10, eval_batches=2, log_every=5, checkpoint_every=10,
                                 checkpoint_dir=str(tmp_path / "ckpt"), device="cpu"), **kw})


def figure(name: str, **values) -> None:
    print(f"\n[fault figures] {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def _cli_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


SWEEP_ARGS = ["sweep", "shape", "--params", "1e4", "--ratios", "4,32", "--parameterizations", "mup,completep",
              "--base-n-embd", "16", "--d-head", "16", "--batch-size", "8", "--seq-len", "32", "--device", "cpu",
              "--json"]


def _sweep_cmd(dbpath: Path, ckpt: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "import cli; cli.main()", *SWEEP_ARGS, "--db", str(dbpath),
            "--checkpoint-dir", str(ckpt), *extra]


def _rows(dbpath: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{dbpath}?mode=ro", uri=True) as con:
        return con.execute("SELECT run_id, status, config_hash, worker, attempts FROM runs").fetchall()


def _wait_rows(dbpath: Path, proc: subprocess.Popen, cond, timeout: float = 120.0) -> list[tuple]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended before the fault: {proc.stderr.read()[-2000:]}")
        if dbpath.exists():
            try:
                rows = _rows(dbpath)
            except sqlite3.OperationalError:  # schema not there yet
                rows = []
            if cond(rows):
                return rows
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the sweep")


def _integrity(dbpath: Path) -> str:
    with sqlite3.connect(dbpath) as con:
        return con.execute("PRAGMA integrity_check").fetchone()[0]


# ------------------------------------------------------------------ in-process


def test_shape_sweep_trains_four_runs_then_none(tmp_path):
    """Issue 2: 2 parameterizations × 2 ratios at a tiny P, run twice: 4 runs, then 0."""
    db = RunDB(tmp_path / "runs.sqlite")
    planned = shape_sweep(base(tmp_path), 1e4, [4, 32], PARAMS, tpp=0.6)
    assert len(planned) == 4
    logs: list[str] = []
    first = run_sweep(planned, db, "shape", "s", workers=1, progress=False, log=logs.append)
    assert first["done"] == 4 and first["skipped"] == 0 and first["failed"] == first["pending"] == 0
    second = run_sweep(planned, db, "shape", "s", workers=1, progress=False, log=logs.append)
    assert second["done"] == 0 and second["skipped"] == 4
    df = db.runs(statuses=None)
    assert len(df) == 4 and df["config_hash"].is_unique and (df["status"] == "done").all()
    assert (df["attempts"] == 1).all() and (df["sweep_id"] == "s").all() and df["lease_expires_at"].isna().all()
    assert "4 already in the database, 0 to train" in logs[-1]


def test_failed_run_is_retried_once_from_its_checkpoint(tmp_path, monkeypatch):
    db = RunDB(tmp_path / "runs.sqlite")
    cfg = base(tmp_path, n_tokens=30 * 256)
    steps_seen: list[int] = []
    original = Batches.train_batch

    def flaky(self, step):
        steps_seen.append(step)
        if step == 13 and steps_seen.count(13) == 1:  # the first attempt dies after its step-10 checkpoint
            raise RuntimeError("node lost its GPU")
        return original(self, step)

    monkeypatch.setattr(Batches, "train_batch", flaky)
    from trainer.sweep import PlannedRun

    counts = run_sweep([PlannedRun(cfg, "flaky")], db, "single", "retry", progress=False, log=lambda m: None)
    assert counts["done"] == 1 and counts["failed"] == 0
    run = db.runs(statuses=None).iloc[0]
    assert run["status"] == "done" and run["attempts"] == 2 and len(db.runs(statuses=None)) == 1
    second_attempt = steps_seen[steps_seen.index(13) + 1:]
    assert second_attempt[0] == 10  # resumed at the checkpoint, not from step 0

    # a run that fails every time is given up after its retry, and the sweep still completes
    monkeypatch.setattr(Batches, "train_batch", lambda self, step: (_ for _ in ()).throw(RuntimeError("always")))
    bad = base(tmp_path, seed=7)
    counts = run_sweep([PlannedRun(bad, "doomed")], db, "single", "retry", progress=False, log=lambda m: None)
    assert counts["failed"] == 1
    doomed = db.runs(where={"config_hash": bad.config_hash()}, statuses=None)
    assert len(doomed) == 1 and doomed["attempts"].iloc[0] == 2 and "always" in doomed["reason"].iloc[0]


# ------------------------------------------------------------------ SIGKILL


def test_whole_sweep_killed_with_kill_9_and_restarted_completes_once(tmp_path):
    """Issue 2: killed mid-way with kill -9 and restarted, no duplicate, integrity_check ok."""
    dbpath, ckpt = tmp_path / "runs.sqlite", tmp_path / "ckpt"
    proc = subprocess.Popen(_sweep_cmd(dbpath, ckpt, "--tpp", "1"), cwd=ROOT, env=_cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rows = _wait_rows(dbpath, proc, lambda rows: sum(r[1] == "done" for r in rows) >= 1
                      and any(r[1] == "running" for r in rows))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed = [r for r in _rows(dbpath) if r[1] == "running"]
    assert len(killed) == 1 and killed[0][3].endswith(f":{proc.pid}")
    done_before = sum(r[1] == "done" for r in _rows(dbpath))

    restart = subprocess.run(_sweep_cmd(dbpath, ckpt, "--tpp", "1"), cwd=ROOT, env=_cli_env(),
                             capture_output=True, text=True, timeout=300)
    assert restart.returncode == 0, restart.stderr[-2000:]
    counts = json.loads(restart.stdout)
    assert counts["skipped"] == done_before and counts["done"] == 4 - done_before
    rows = _rows(dbpath)
    assert len(rows) == 4 and len({r[2] for r in rows}) == 4 and all(r[1] == "done" for r in rows)
    assert killed[0][0] in {r[0] for r in rows}  # the killed run's own row was taken over and finished
    assert _integrity(dbpath) == "ok"
    figure("sweep killed with kill -9", killed_mid_run=1, done_before=done_before, restarted_and_trained=4 - done_before,
           duplicates=0, integrity="ok")


@pytest.mark.slow
def test_worker_sigkilled_mid_run_is_reclaimed_and_each_config_done_once(tmp_path):
    dbpath, ckpt = tmp_path / "runs.sqlite", tmp_path / "ckpt"
    proc = subprocess.Popen(_sweep_cmd(dbpath, ckpt, "--tpp", "1", "--workers", "2", "--lease-s", "60"),
                            cwd=ROOT, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rows = _wait_rows(dbpath, proc, lambda rows: any(r[1] == "running" and r[3] for r in rows))
    victim = next(r for r in rows if r[1] == "running")
    pid = int(victim[3].rsplit(":", 1)[1])
    assert pid != proc.pid  # a worker process, not the sweep's parent
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    counts = json.loads(out)
    rows = _rows(dbpath)
    assert counts["done"] == 4 and len(rows) == 4 and all(r[1] == "done" for r in rows)
    assert len({r[2] for r in rows}) == 4  # exactly once per config
    victim_now = next(r for r in rows if r[0] == victim[0])
    assert victim_now[4] == 2 and not victim_now[3].endswith(f":{pid}")  # re-claimed by another worker
    assert f"worker process {pid} died" in err
    assert _integrity(dbpath) == "ok"
    again = subprocess.run(_sweep_cmd(dbpath, ckpt, "--tpp", "1", "--workers", "2"), cwd=ROOT, env=_cli_env(),
                           capture_output=True, text=True, timeout=120)
    assert json.loads(again.stdout)["skipped"] == 4 and len(_rows(dbpath)) == 4
    figure("worker killed with SIGKILL", killed=1, reclaimed=1, runs=4, duplicates=0)


# ------------------------------------------------------------------ submitit


@pytest.mark.slow
def test_submitit_local_executor_workers_share_the_queue(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs inherit it: one thread each, as on a 2-core runner
    db = RunDB(tmp_path / "runs.sqlite")
    planned = shape_sweep(base(tmp_path), 1e4, [4, 32], PARAMS, tpp=0.4)
    executor = submitit.LocalExecutor(folder=str(tmp_path / "jobs"))
    executor.update_parameters(timeout_min=10)
    logs: list[str] = []
    counts = run_sweep(planned, db, "shape", "slurm-like", workers=2, progress=False, log=logs.append,
                       launcher="slurm", executor=executor, lease_s=30)
    assert counts["done"] == 4 and counts["pending"] == counts["failed"] == 0
    df = db.runs(statuses=None)
    assert len(df) == 4 and (df["attempts"] == 1).all() and df["config_hash"].is_unique
    assert any("submitted 2 worker job(s)" in m for m in logs)
    assert df["worker"].nunique() >= 1


def test_slurm_launcher_without_submitit_or_slurm_is_a_clear_error(tmp_path, monkeypatch):
    from planner.errors import CpPlanError

    db = RunDB(tmp_path / "runs.sqlite")
    planned = shape_sweep(base(tmp_path), 1e4, [4], PARAMS[:1], tpp=0.4)
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    with pytest.raises(CpPlanError, match=r"--launcher slurm needs submitit: pip install 'cp-plan\[cluster\]'"):
        run_sweep(planned, db, "shape", "x", launcher="slurm", slurm=dict(folder=str(tmp_path), partition=None,
                                                                           time_min=10, gpus_per_node=1))
    monkeypatch.delitem(sys.modules, "submitit")
    if __import__("shutil").which("srun") is None:
        pytest.importorskip("submitit")
        with pytest.raises(CpPlanError, match="Slurm is not available on this machine"):
            run_sweep(planned, db, "shape", "x", launcher="slurm", slurm=dict(folder=str(tmp_path), partition=None,
                                                                               time_min=10, gpus_per_node=1))
    assert db.count() == 0  # refused before anything was queued


# ------------------------------------------------------------------ the parent killed


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, read from /proc."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            alive.append(int(entry.name))
    return alive


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")
def test_killing_the_sweep_parent_stops_its_workers_and_never_undoes_a_done_run(tmp_path):
    """Issue 16: SIGTERM or SIGKILL to the parent of a two-worker local sweep, at random moments,
    several times: within a few seconds no worker is alive, no 'done' row has changed, and the
    rerun finishes every config exactly once."""
    import random

    rng = random.Random(16)
    dbpath, ckpt = tmp_path / "runs.sqlite", tmp_path / "ckpt"
    cmd = _sweep_cmd(dbpath, ckpt, "--tpp", "2", "--workers", "2", "--launcher", "local")
    kills = []
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            _wait_rows(dbpath, proc, lambda rows: any(r[1] == "running" and r[3] and not r[3].endswith(f":{proc.pid}")
                                                      for r in rows), timeout=180)
        except AssertionError:
            proc.wait(timeout=60)  # everything finished before a worker was seen: nothing left to kill
            break
        time.sleep(rng.uniform(0.0, 2.0))
        done_before = {r[0]: r for r in _rows(dbpath) if r[1] == "done"}
        proc.send_signal(sig)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 8.0
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = _group_alive(proc.pid)
        for pid in survivors:  # do not leave them training into the next iteration
            os.kill(pid, signal.SIGKILL)
        assert not survivors, f"processes of the killed sweep still alive after {signal.Signals(sig).name}: {survivors}"
        time.sleep(0.5)
        after = {r[0]: r for r in _rows(dbpath)}
        for run_id, row in done_before.items():
            assert after[run_id][1] == "done" and after[run_id][3] == row[3] and after[run_id][4] == row[4], \
                f"done run {run_id} changed after {signal.Signals(sig).name}: {row} -> {after[run_id]}"
        kills.append((signal.Signals(sig).name, len(done_before)))
    assert kills, "the sweep never reached a worker's run"
    rerun = subprocess.run(cmd, cwd=ROOT, env=_cli_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    rows = _rows(dbpath)
    assert len({r[2] for r in rows}) == 4 and all(r[1] == "done" for r in rows)
    assert len(rows) == 4  # one row per config: killed runs were resumed, not duplicated
    assert _integrity(dbpath) == "ok"
    figure("sweep parent killed", kills=kills, runs=4, duplicates=0)


def test_a_done_run_is_never_reopened_by_updates_only_by_retrain(tmp_path):
    db = RunDB(tmp_path / "runs.sqlite")
    cfg = base(tmp_path)
    run_id = db.start_run(cfg.to_dict(), cfg.config_hash())
    db.finish_run(run_id, "done", loss=3.0)
    from planner.errors import CpPlanError

    for status in ("running", "pending", "failed"):
        with pytest.raises(CpPlanError, match="never re-opened"):
            db.update_run(run_id, status=status)
    with pytest.raises(CpPlanError, match="never re-opened"):
        db.finish_run(run_id, "failed", reason="x")
    assert db.get_run(run_id)["status"] == "done"
    assert db.claim("w:1", 60, config_hashes=[cfg.config_hash()]) is None
    assert db.enqueue(cfg.to_dict(), cfg.config_hash())[1] == "skipped"
    db.reopen_run(run_id)
    assert db.get_run(run_id)["status"] == "pending"
    assert db.claim("w:1", 60, config_hashes=[cfg.config_hash()])["run_id"] == run_id


def test_a_fresh_database_never_reuses_another_databases_final_checkpoints(tmp_path, monkeypatch):
    """Issue 17 item 3: checkpoints are keyed by config hash; a sweep into a new --db trains its
    runs itself unless CP_PLAN_REUSE_CHECKPOINTS=1, and then the reuse is recorded."""
    planned = shape_sweep(base(tmp_path), 1e4, [4], [("completep", None)], tpp=0.6)
    first = RunDB(tmp_path / "a.sqlite")
    run_sweep(planned, first, "shape", "s", workers=1, progress=False, log=lambda m: None)
    a = first.runs(statuses=None).iloc[0]
    second = RunDB(tmp_path / "b.sqlite")
    run_sweep(planned, second, "shape", "s", workers=1, progress=False, log=lambda m: None)
    b = second.runs(statuses=None).iloc[0]
    assert b["status"] == "done" and b["run_id"] != a["run_id"] and not b["reason"]
    assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)  # same config, same seed: trained again, same result
    assert second.curve(b["run_id"])["step"].min() <= 10  # its own curve from the start
    monkeypatch.setenv("CP_PLAN_REUSE_CHECKPOINTS", "1")
    third = RunDB(tmp_path / "c.sqlite")
    run_sweep(planned, third, "shape", "s", workers=1, progress=False, log=lambda m: None)
    c = third.runs(statuses=None).iloc[0]
    assert c["status"] == "done" and "reused the checkpoint of run" in c["reason"]


def test_a_failed_run_is_retried_with_the_current_commands_device(tmp_path):
    """Issue 17 item 2: a run that failed on --device cuda:0 (no CUDA here) trains on the retry
    with --device cpu: settings outside the config hash come from the current command."""
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    db = RunDB(tmp_path / "runs.sqlite")
    bad = shape_sweep(base(tmp_path, device="cuda:0"), 1e4, [4], [("completep", None)], tpp=0.5)
    counts = run_sweep(bad, db, "shape", "s", workers=1, progress=False, log=lambda m: None)
    assert counts["failed"] == 1
    good = shape_sweep(base(tmp_path, device="cpu"), 1e4, [4], [("completep", None)], tpp=0.5)
    assert good[0].config.config_hash() == bad[0].config.config_hash()
    counts = run_sweep(good, db, "shape", "s", workers=1, progress=False, log=lambda m: None)
    assert counts["done"] == 1
    rows = db.runs(statuses=None)
    assert len(rows) == 1 and rows["status"].tolist() == ["done"]
