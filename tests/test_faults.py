"""Faults injected on purpose: concurrent writers, a process killed in the middle of an import,
and a checkpoint truncated on disk. Each test is bounded to seconds; the figures they measure
(rows written and lost, faults injected and survived) print with `pytest -s`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_runs

from planner.db import RunDB

ROOT = Path(__file__).resolve().parent.parent
CONFIG = {"parameterization": "completep", "n_embd": 32, "n_layer": 2, "d_head": 16, "lr": 1e-2,
          "n_tokens": 10_240, "batch_size": 8, "seq_len": 32, "seed": 0}


def figure(name: str, **values) -> None:
    print(f"\n[fault figures] {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    return str(tmp_path / "f.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url")


# ------------------------------------------------------------------ 8 writers × 50 runs


def test_eight_writers_fifty_runs_each_lose_no_row(url):
    n_procs, n_runs = 8, 50
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    t0 = time.monotonic()
    procs = [ctx.Process(target=write_runs, args=(url, w, n_runs, CONFIG, 0.001)) for w in range(n_procs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    wall = time.monotonic() - t0
    assert [p.exitcode for p in procs] == [0] * n_procs
    rdb = RunDB(url, create=False)
    df = rdb.runs(statuses=None)
    expected = {f"w{w}-{i}" for w in range(n_procs) for i in range(n_runs)}
    lost = len(expected - set(df["config_hash"]))
    figure("concurrent writers", backend=rdb.backend, processes=n_procs, runs_written=len(df),
           runs_lost=lost, transactions=n_procs * n_runs * 4, wall_s=round(wall, 1))
    assert lost == 0 and len(df) == n_procs * n_runs and df["run_id"].is_unique
    assert (df["status"] == "done").all() and (df["step"] == 2).all()
    n_points = sum(len(rdb.curve(r)) for r in df["run_id"].iloc[::40])
    assert n_points == 3 * len(df["run_id"].iloc[::40])
    if rdb.backend == "sqlite":
        with sqlite3.connect(rdb.path) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert con.execute("SELECT count(*) FROM curves").fetchone()[0] == 3 * n_procs * n_runs


# ------------------------------------------------------------------ SIGKILL during an import

IMPORTER = r"""
import sys, time
import pandas as pd
import sqlalchemy as sa
from planner.db import RunDB

url, marker, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
db = RunDB(url)
if mode == "pause":  # stop inside the transaction, after the rows went in, before the commit
    @sa.event.listens_for(db.engine, "after_cursor_execute")
    def _hang(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO RUNS"):
            open(marker, "w").close()
            time.sleep(120)
else:
    open(marker, "w").close()
df = pd.DataFrame({"run_id": [f"imp-{i}" for i in range(n)], "n_params": [1e6 + i for i in range(n)],
                   "n_tokens": 2e7, "loss": 3.0, "notes": "x" * 50})
db.import_frame(df, "killed")
print("committed", flush=True)
"""


def _state(url: str):
    rdb = RunDB(url, create=False)
    try:
        return rdb.count(), rdb.fingerprint()
    finally:
        rdb.close()


def _start_importer(url: str, marker: Path, n: int, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", IMPORTER, url, str(marker), str(n), mode],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"importer exited early: {proc.stderr.read()}")
        assert time.monotonic() < deadline, "importer never reached the import"
        time.sleep(0.02)


def test_sigkill_inside_the_import_transaction_changes_nothing(url, tmp_path):
    rdb = RunDB(url)
    rdb.import_frame(pd.DataFrame({"n_params": [1e6], "n_tokens": [2e7], "loss": [3.0]}), "before")
    before = _state(url)
    marker = tmp_path / "inside"
    proc = _start_importer(url, marker, 2000, "pause")
    _wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10  # PostgreSQL notices the dropped connection and rolls back
    while _state(url) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _state(url) == before
    if rdb.backend == "sqlite":
        with sqlite3.connect(rdb.path) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # no lock or half-written row is left behind: the same import now goes through whole
    df = pd.DataFrame({"run_id": [f"imp-{i}" for i in range(2000)], "n_params": [1e6 + i for i in range(2000)],
                       "n_tokens": 2e7, "loss": 3.0})
    assert RunDB(url).import_frame(df, "killed") == 2000 and _state(url)[0] == before[0] + 2000
    figure("kill inside import", backend=rdb.backend, rows_in_killed_transaction=2000, rows_left=0)


def test_sigkill_at_random_moments_of_an_import_is_all_or_nothing(tmp_path):
    url = str(tmp_path / "random.sqlite")
    RunDB(url).close()
    n, outcomes = 3000, []
    # one import left alone, to learn how long the whole of one takes
    marker = tmp_path / "timing"
    proc = _start_importer(url, marker, n, "go")
    _wait_for(marker, proc)
    t0 = time.monotonic()
    assert proc.wait(timeout=120) == 0 and _state(url)[0] == n
    duration = time.monotonic() - t0
    rng = random.Random(5)
    for k in range(2):
        with sqlite3.connect(url) as con:  # start each round empty
            con.execute("DELETE FROM runs")
        before = _state(url)
        marker = tmp_path / f"go{k}"
        proc = _start_importer(url, marker, n, "go")
        _wait_for(marker, proc)
        time.sleep(rng.uniform(0.1, 0.8) * duration)  # in validation, in the insert, or at the commit
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        after = _state(url)
        assert after[0] in (before[0], before[0] + n), after  # all or nothing
        assert (after == before) == (after[0] == before[0])
        outcomes.append("none" if after[0] == before[0] else "all")
    with sqlite3.connect(url) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    figure("kill at random moments of an import", import_s=round(duration, 2), kills=len(outcomes),
           outcomes=outcomes, partial_imports=0)


# ------------------------------------------------------------------ a truncated checkpoint


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, capfd):
    torch = pytest.importorskip("torch")
    from trainer.config import TrainConfig
    from trainer.train import CHECKPOINT_NAME, train_run

    torch.set_num_threads(1)
    cfg = TrainConfig(parameterization="completep", n_embd=32, n_layer=2, d_head=16, base_n_embd=32,
                      base_n_layer=1, lr=1e-2, seq_len=32, batch_size=8, n_tokens=20 * 256, eval_every=10,
                      eval_batches=2, log_every=5, checkpoint_every=5, checkpoint_dir=str(tmp_path), device="cpu")
    straight = train_run(cfg, None, progress=False)
    ckpt = cfg.checkpoint_path() / CHECKPOINT_NAME
    prev = ckpt.with_name(CHECKPOINT_NAME + ".prev")
    assert torch.load(ckpt, weights_only=False)["step"] == 20 and torch.load(prev, weights_only=False)["step"] == 15
    raw = ckpt.read_bytes()
    ckpt.write_bytes(raw[: len(raw) // 2])  # a copy cut short (full disk, interrupted rsync)
    capfd.readouterr()
    resumed = train_run(cfg, None, progress=False, resume=True)
    err = capfd.readouterr().err
    assert f"ignoring unreadable checkpoint {ckpt}" in err
    assert f"resuming from the previous checkpoint {prev} (step 15)" in err
    assert resumed["status"] == "done"
    # steps 16-20 were trained again from the step-15 state: the same result as without the fault
    assert resumed["loss"] == pytest.approx(straight["loss"], rel=1e-6)
    assert torch.load(ckpt, weights_only=False)["step"] == 20  # and a good checkpoint is back
    figure("truncated checkpoint", injected=1, survived=1, resumed_from_step=15)
