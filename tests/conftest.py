"""Shared fixtures and helpers: the CLI run in this process (:func:`run_cli`), the one-line error
check (:func:`one_line_error`), a scratch database path (``dbpath``), and a scratch PostgreSQL
database per test when a server is available.

`.ci/run` starts a throw-away PostgreSQL server on loopback and exports CP_PLAN_TEST_PG_URL
(e.g. postgresql://postgres@127.0.0.1:54329/postgres); without it the PostgreSQL variants of the
database tests are skipped, with that reason shown in pytest's summary (`-rs`).
"""

from __future__ import annotations

import os
import sys
import uuid

import pytest


def run_cli(*args) -> tuple[int, str, str]:
    """``cp-plan ARGS`` in this process, as the console script runs it: (exit code, stdout,
    stderr) (cli.run_captured). Import it with ``from conftest import run_cli``."""
    import cli

    return cli.run_captured(args)


def run_cli_process(*args, env: dict | None = None, timeout: float = 600):
    """``cp-plan ARGS`` as a fresh process from the project root (``python -m cli``), with
    ``env`` added to the environment: the CompletedProcess (text stdout and stderr)."""
    import subprocess
    from pathlib import Path

    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)


def write_runs(url: str, worker: int, n_runs: int, config: dict, loss_step: float) -> None:
    """One concurrent writer: ``n_runs`` runs, each started, given a curve, updated and finished
    (a multiprocessing target for the tests that race writers against one database)."""
    from planner.db import RunDB

    run_db = RunDB(url)  # several processes may create the schema at the same moment
    for i in range(n_runs):
        rid = run_db.start_run({**config, "seed": i}, f"w{worker}-{i}", sweep_id=f"w{worker}")
        run_db.add_curve(rid, [{"step": s, "train_loss": 4.0 - s / 10} for s in range(3)])
        run_db.update_run(rid, step=2)
        run_db.finish_run(rid, "done", loss=3.0 + i * loss_step, wall_s=0.01)
    run_db.close()


def one_line_error(code: int, err: str, *fragments: str) -> None:
    """A failed command's contract: exit 1, one ``cp-plan: error: ...`` line on stderr, no
    traceback, and each of ``fragments`` in it."""
    assert code == 1, (code, err)
    assert err.startswith("cp-plan: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err


@pytest.fixture
def dbpath(tmp_path, monkeypatch):
    """A path for a new run database (not created), with $CP_PLAN_DB unset."""
    monkeypatch.delenv("CP_PLAN_DB", raising=False)
    return tmp_path / "runs.sqlite"

PG_URL = os.environ.get("CP_PLAN_TEST_PG_URL", "").strip()
PG_SKIP_REASON = ("PostgreSQL tests need a server: set CP_PLAN_TEST_PG_URL=postgresql://user@host:port/db "
                  "(.ci/run starts one and sets it)")


def pytest_report_header(config):
    return f"PostgreSQL tests: {'against ' + PG_URL if PG_URL else 'skipped (CP_PLAN_TEST_PG_URL not set)'}"


@pytest.fixture
def pg_url():
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    import sqlalchemy as sa

    base = sa.make_url(PG_URL).set(drivername="postgresql+psycopg")
    name = f"cp_plan_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"CP_PLAN_TEST_PG_URL is set but the server is unusable: {str(exc.orig).splitlines()[0]}")
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def one_thread():
    """Tiny models train faster (and less noisily beside other work) on one thread; torch is
    imported here, not at module level, so planner-only tests never load it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
