"""Hostile input to the CLI and the run database: bad files, read-only storage, full disks, damaged
databases, big tables. (About 800 lines: one regression test per finding of three hostile probes,
grouped by finding; the generated suite itself is bench/hostile.py.)

One regression test (or more) per finding: nothing wrong is stored, nothing is half-written,
every failure is one line on stderr, and the big-table paths stay bounded. The structural CSV
property (ragged rows, extra separators, quoting) is generated with hypothesis.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import one_line_error as _one_line_error, run_cli as _cli
from planner.db import DEFAULT_DB_PATH, RunDB
from planner.errors import CpPlanError
from planner.importing import prepare_import
from planner.tableio import MAX_COUNT, read_table

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@pytest.fixture
def seeded_db(tmp_path) -> Path:
    path = tmp_path / "runs.sqlite"
    RunDB(path).import_frame(pd.DataFrame({"run_id": ["keep"], "n_params": [1e6], "n_tokens": [2e7],
                                           "loss": [3.0]}), "before")
    return path


def _state(path) -> tuple:
    db = RunDB(path)
    return db.count(), db.fingerprint()


# ------------------------------------------------------------------ 1. CSV structure


@pytest.mark.parametrize("text, line", [
    ("n_params,n_tokens,loss\n1e6,2e7,3.0,\n2e6,4e7,2.9,\n", 2),  # trailing commas: shifted columns on main
    ("n_params,n_tokens,loss\n1e6,2e7,3.0\n2e6,4e7\n", 3),         # a short row: padded on main
    ("n_params,n_tokens,loss\n1e6,2e7,3.0\n2e6,4e7,2.9,7\n", 3),   # one field too many
    ("n_params,n_tokens,loss\n1e6,\"2e7,3.0\n", 2),                # an unclosed quote
])
def test_ragged_or_badly_quoted_csv_is_refused(seeded_db, tmp_path, text, line):
    f = tmp_path / "t.csv"
    f.write_text(text)
    before = _state(seeded_db)
    code, _, err = _cli("runs", "import", f, "--source", "x", "--db", seeded_db)
    _one_line_error(code, err)
    assert f"line {line}" in err
    assert _state(seeded_db) == before


def test_quoted_commas_and_blank_lines_import(seeded_db, tmp_path):
    f = tmp_path / "t.csv"
    f.write_text('n_params,n_tokens,loss,notes\n1e6,2e7,3.0,"a, b"\n\n2e6, 4e7,2.9,"say ""hi"""\n')
    code, out, err = _cli("runs", "import", f, "--source", "x", "--db", seeded_db, "--json")
    assert code == 0, err
    df = RunDB(seeded_db).runs(where={"source": "x"})
    assert df["n_params"].tolist() == [1e6, 2e6] and df["loss"].tolist() == [3.0, 2.9]
    assert df["notes"].tolist() == ["a, b", 'say "hi"']


# hypothesis: CSV *structure*, not only cell values. A table of valid runs is rendered line by
# line with one mutation per row; a structural mutation must be refused whole, anything else must
# import exactly the values written (no shifted column).
_SOURCES = itertools.count()
STRUCTURAL = ("trailing_comma", "drop_field", "extra_field", "unquoted_comma", "unclosed_quote", "stray_quote")
HARMLESS = ("none", "quote_all", "quote_number", "spaces", "blank_line_after")


def _render(values: list[str], mutation: str) -> str:
    v = list(values)
    if mutation == "trailing_comma":
        return ",".join(v) + ","
    if mutation == "drop_field":
        return ",".join(v[:-1])
    if mutation == "extra_field":
        return ",".join(v + ["1"])
    if mutation == "unquoted_comma":
        v[0] = v[0].replace(".", ",", 1) if "." in v[0] else v[0] + ",5"
        return ",".join(v)
    if mutation == "unclosed_quote":
        return ",".join(v[:-1] + ['"' + v[-1]])
    if mutation == "stray_quote":
        return ",".join(v[:-1] + ['"' + v[-1] + '"x'])
    if mutation == "quote_all":
        return ",".join(f'"{x}"' for x in v)
    if mutation == "quote_number":
        return ",".join(v[:-1] + [f'"{v[-1]}"'])
    if mutation == "spaces":
        return ", ".join(v)
    if mutation == "blank_line_after":
        return ",".join(v) + "\n"
    return ",".join(v)


@settings(max_examples=60, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(st.floats(1e5, 1e10), st.floats(1e6, 1e12), st.floats(0.5, 9.0)),
                     min_size=1, max_size=5),
       mutations=st.lists(st.sampled_from(STRUCTURAL + HARMLESS), min_size=5, max_size=5),
       extra_col=st.booleans())
def test_generated_csv_structure(tmp_path, rows, mutations, extra_col):
    seeded_db = tmp_path / "h.sqlite"
    if not seeded_db.exists():
        RunDB(seeded_db).import_frame(pd.DataFrame({"n_params": [1e6], "n_tokens": [2e7], "loss": [3.0]}), "before")
    header = ["n_params", "n_tokens", "loss"] + (["notes"] if extra_col else [])
    lines = [",".join(header)]
    used = mutations[:len(rows)]
    for (n, d, loss), m in zip(rows, used):
        values = [repr(n), repr(d), repr(loss)] + (["x"] if extra_col else [])
        lines.append(_render(values, m))
    f = Path(tempfile.mkdtemp(dir=tmp_path)) / "t.csv"
    f.write_text("\n".join(lines) + "\n")
    before = _state(seeded_db)
    source = f"s{next(_SOURCES)}"
    code, out, err = _cli("runs", "import", f, "--source", source, "--db", seeded_db, "--json")
    if any(m in STRUCTURAL for m in used):
        _one_line_error(code, err)
        assert _state(seeded_db) == before
        return
    assert code == 0, err
    df = RunDB(seeded_db).runs(where={"source": source})
    assert df["n_params"].tolist() == [r[0] for r in rows]
    assert df["n_tokens"].tolist() == [r[1] for r in rows]
    assert df["loss"].tolist() == [r[2] for r in rows]


# ------------------------------------------------------------------ 2. internal columns


def test_internal_columns_are_refused_with_a_value_and_ignored_when_empty(seeded_db):
    df = pd.DataFrame({"n_params": [1e6], "n_tokens": [2e7], "loss": [3.0], "status": ["done"],
                       "config_hash": ["0123456789abcdef"]})
    with pytest.raises(CpPlanError, match=r"column 'config_hash' is internal .*--rename config_hash=orig_config_hash"):
        prepare_import(df, "x")
    for col in ("worker", "lease_expires_at", "attempts", "step", "sweep", "created_at", "config_json"):
        with pytest.raises(CpPlanError, match=f"column '{col}' is internal"):
            prepare_import(df.drop(columns="config_hash").assign(**{col: ["1"]}), "x")
    empty = df.assign(config_hash=[None], worker=[float("nan")])
    plan = prepare_import(empty, "x")
    assert plan.ignored_columns == ("config_hash", "worker")
    db = RunDB(seeded_db)
    db.import_plan(plan)
    run = db.get_run("x-0")
    assert run["config_hash"] is None and run["worker"] is None
    assert db.find_done("0123456789abcdef") is None  # a sweep would not skip this config


# ------------------------------------------------------------------ 3. derived counts, loss bounds


@pytest.mark.parametrize("row, col, what", [
    ({"n_params": 1e-5, "flops": 1e40}, "n_tokens", "derived"),      # D = C/6N beyond MAX_COUNT
    ({"n_params": 1e30, "n_tokens": 1e30}, "flops", "derived"),     # C = 6ND beyond MAX_COUNT
    ({"n_params": 1e39, "flops": 1e-300}, "n_tokens", "derived"),  # underflows to 0
    ({"n_params": 1e6, "n_tokens": 2e7, "loss": 0.0}, "loss", "zero"),
    ({"n_params": 1e6, "n_tokens": 2e7, "loss": 1e308}, "loss", "above 100"),  # tableio.MAX_LOSS
    ({"n_params": 1e6, "n_tokens": 2e7, "loss": "0"}, "loss", "zero"),
])
def test_derived_counts_and_losses_are_bounded(row, col, what):
    df = pd.DataFrame([{"loss": 3.0, **row}], dtype=object)
    with pytest.raises(CpPlanError, match=f"column '{col}'.*{what}"):
        prepare_import(df, "x")


def test_every_derived_count_is_finite_and_positive():
    df = pd.DataFrame({"n_params": [1e6, 2e6], "flops": [1.2e14, 4.8e14], "loss": [3.0, 2.9]})
    plan = prepare_import(df, "x")
    tokens = plan.columns["n_tokens"]
    assert np.all(np.isfinite(tokens)) and np.all(tokens > 0) and np.all(tokens <= MAX_COUNT)
    assert tokens.tolist() == pytest.approx([2e7, 4e7])


# ------------------------------------------------------------------ 4. checkpoints are data


def test_no_weights_only_false_in_the_code():
    hits = [f"{p}:{i}" for d in ("trainer", "planner") for p in (ROOT / d).rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if "weights_only=False" in line]
    assert hits == []


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['CP_PLAN_TEST_MARKER']}",))


def test_a_checkpoint_cannot_run_code(tmp_path, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    from trainer.config import TrainConfig
    from trainer.train import load_checkpoint

    cfg = TrainConfig(n_embd=32, n_layer=2, d_head=16, device="cpu", checkpoint_dir=str(tmp_path))
    marker = tmp_path / "pwned"
    monkeypatch.setenv("CP_PLAN_TEST_MARKER", str(marker))
    path = tmp_path / "checkpoint.ckpt"
    torch.save({"step": 1, "model": {}, "config_hash": cfg.config_hash(), "evil": _Payload()}, path)
    assert load_checkpoint(path, cfg) is None  # refused as unreadable ...
    assert not marker.exists()                 # ... without running the pickled command
    assert "ignoring unreadable checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------------ 5. passwords


@pytest.mark.parametrize("url", [
    "postgresql://me:pw1secret@127.0.0.1:1/db",
    "postgresql://me@127.0.0.1:1/db?password=pw1secret",
    "postgresql://me@127.0.0.1:1/db?sslmode=disable&password=pw1secret",
])
def test_passwords_never_printed(url):
    code, out, err = _cli("runs", "list", "--db", url, "--json")
    _one_line_error(code, err)
    assert "pw1secret" not in err + out and "***" in err


def test_mask_secrets_every_form():
    from planner.errors import mask_secrets

    text = ("postgresql://u:p%40ss@h/db postgresql://u@h/db?sslmode=require&password=s3 "
            "host=h password=s4 user=u  postgresql+psycopg://u:p@ss@h:5432/db")
    masked = mask_secrets(text)
    for secret in ("p%40ss", "s3", "s4", "p@ss"):
        assert secret not in masked, masked
    assert masked.count("***") == 4


def test_a_malformed_port_is_one_line():
    code, _, err = _cli("runs", "list", "--db", "postgresql://me:pw1secret@dbhost:54x2/db")
    _one_line_error(code, err)
    assert "port" in err and "pw1secret" not in err


def test_slurm_jobs_do_not_carry_the_password(tmp_path):
    import sqlalchemy as sa

    from trainer import cluster

    class FakeDB:
        path, backend = None, "postgresql"
        url = sa.make_url("postgresql+psycopg://me:pw1secret@dbhost:5432/runs?sslmode=require&password=pw2secret")

        def worker_url(self):
            return self.url.render_as_string(hide_password=False)

    class FakeExecutor:
        folder = tmp_path / "jobs"

        def update_parameters(self, **kw):
            pass

        def map_array(self, fn, *lists):
            self.args = lists
            return []

    ex = FakeExecutor()
    cluster.submit_workers(ex, FakeDB(), ["h1"], 2, lease_s=60, max_attempts=2)
    flat = json.dumps([list(map(str, a)) for a in ex.args])
    assert "pw1secret" not in flat and "pw2secret" not in flat
    url, secret = ex.args[0][0], ex.args[-1][0]
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    full = sa.make_url(cluster._url_with_secret(url, secret))
    assert full.password == "pw1secret" and full.host == "dbhost" and full.query == {"sslmode": "require"}


# ------------------------------------------------------------------ 6. read-only storage


def _unprivileged(argv: list[str]) -> list[str]:
    """``argv`` run as nobody when we are root (root ignores file modes): util-linux setpriv
    drops the uid while the interpreter under /root stays reachable."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a folder read-only to this test")
    return ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", *argv]


def test_read_only_database_and_folder(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="cp-plan-ro-"))
    try:
        ro = base / "ro"
        ro.mkdir()
        db = ro / "runs.sqlite"
        shutil.copy(DEFAULT_DB_PATH, db)
        out_dir = base / "out"
        out_dir.mkdir()
        os.chmod(out_dir, 0o777)
        os.chmod(db, 0o444)
        os.chmod(ro, 0o555)
        os.chmod(base, 0o755)
        run_id = RunDB(DEFAULT_DB_PATH, create=False).runs()["run_id"].iloc[-1]
        commands = [["runs", "list", "--limit", "3"], ["runs", "show", run_id], ["runs", "list", "--json"],
                    ["runs", "export", "--out", str(out_dir / "runs.csv")],
                    ["fit", "--law", "compute", "--bootstrap", "0", "--json"],
                    ["recommend", "--params", "1e9", "--json"]]
        for args in commands:
            proc = subprocess.run(_unprivileged([PY, "-c", "import cli; cli.main()", *args, "--db", str(db)]),
                                  cwd=ROOT, capture_output=True, text=True, timeout=600,
                                  env={**os.environ, "CP_PLAN_DB": ""})
            assert proc.returncode == 0, (args, proc.stderr[-2000:])
            assert "readonly" not in proc.stderr
            assert sorted(p.name for p in ro.iterdir()) == ["runs.sqlite"], args  # no -wal/-shm left
        assert (out_dir / "runs.csv").read_text().count("\n") == 108
    finally:
        os.chmod(base / "ro", 0o755)
        shutil.rmtree(base)


def test_reading_a_writable_database_leaves_no_side_files(seeded_db):
    code, _, err = _cli("runs", "list", "--db", seeded_db)
    assert code == 0, err
    import gc

    gc.collect()
    assert sorted(p.name for p in seeded_db.parent.iterdir()) == ["runs.sqlite"]


# ------------------------------------------------------------------ 7. atomic output files


def _run_with_file_size_limit(args: list[str], limit: int) -> subprocess.CompletedProcess:
    """cp-plan in a child whose writes beyond ``limit`` bytes fail (EFBIG), as on a full disk."""
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); import cli; cli.main()")
    return subprocess.run([PY, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture
def epoch_db(tmp_path) -> Path:
    raw = pd.read_csv(ROOT / "tests" / "data" / "epoch_chinchilla.csv")
    df = pd.DataFrame({"n_params": raw["Model Size"], "flops": raw["Training FLOP"], "loss": raw["loss"]})
    path = tmp_path / "epoch.sqlite"
    RunDB(path).import_frame(df, "epoch")
    return path


def test_fit_out_on_a_full_disk_keeps_the_old_file(epoch_db, tmp_path):
    out = tmp_path / "laws.json"
    out.write_text('{"old": true}\n')
    proc = _run_with_file_size_limit(["fit", "--law", "chinchilla", "--bootstrap", "400", "--db", str(epoch_db),
                                      "--out", str(out)], 40_000)
    _one_line_error(proc.returncode, proc.stderr)
    assert "File too large" in proc.stderr and str(out) in proc.stderr
    assert json.loads(out.read_text()) == {"old": True}
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("epoch.sqlite"))
    assert left == ["laws.json"]  # no temp file left


def test_export_and_report_on_a_full_disk_are_one_line(epoch_db, tmp_path):
    for args in (["runs", "export", "--out", str(tmp_path / "runs.jsonl")],
                 ["report", "--out", str(tmp_path / "report.html")]):
        proc = _run_with_file_size_limit([*args, "--db", str(epoch_db)], 40_000)
        _one_line_error(proc.returncode, proc.stderr.splitlines()[-1] + "\n")
        assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("epoch")) == []


def test_write_atomic_turns_os_errors_into_one_line(tmp_path):
    from planner.fileio import write_atomic

    with pytest.raises(CpPlanError, match=r"cannot write .*: folder .* does not exist"):
        write_atomic(tmp_path / "no" / "x.json", "{}")
    with pytest.raises(CpPlanError, match="it is a folder"):
        write_atomic(tmp_path, "{}")
    target = tmp_path / "x.json"
    target.write_text("old")
    with mock.patch("os.replace", side_effect=OSError(28, "No space left on device")):
        with pytest.raises(CpPlanError, match="No space left on device; free some space"):
            write_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


# ------------------------------------------------------------------ 9. abandoned 'running' rows


def test_a_fresh_run_marks_abandoned_rows_of_its_config(tmp_path):
    pytest.importorskip("torch")
    from trainer.config import TrainConfig
    from trainer.train import train_run

    cfg = TrainConfig(parameterization="completep", n_embd=32, n_layer=2, d_head=16, base_n_embd=32,
                      base_n_layer=1, lr=1e-2, seq_len=32, batch_size=8, n_tokens=5 * 8 * 32, eval_every=5,
                      eval_batches=1, log_every=5, checkpoint_every=0, checkpoint_dir=str(tmp_path / "ck"),
                      device="cpu")
    db = RunDB(tmp_path / "runs.sqlite")
    host = socket.gethostname()
    dead = db.start_run(cfg.to_dict(), cfg.config_hash(), worker=f"{host}:{2 ** 22 + 4321}")  # killed train
    alive = db.start_run(cfg.to_dict(), cfg.config_hash(), worker=f"{host}:{os.getppid()}")
    record = train_run(cfg, db, progress=False)
    assert record["status"] == "done" and record["run_id"] not in (dead, alive)
    gone = db.get_run(dead)
    assert gone["status"] == "failed" and gone["reason"].startswith("crashed: worker")
    assert db.get_run(alive)["status"] == "running"  # a live process keeps its run


# ------------------------------------------------------------------ 10. bounded chinchilla fit


def _synthetic(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = N * np.exp(rng.uniform(np.log(5), np.log(100), n))
    L = (1.8172 + 477.8 / N ** 0.3473 + 2143 / D ** 0.3672) * np.exp(rng.normal(0, 0.005, n))
    return pd.DataFrame({"n_params": N, "n_tokens": D, "loss": L})


def test_batched_solver_and_start_ranking_change_nothing(monkeypatch):
    from planner.fit import chinchilla, common, solver

    X, y, scale, meta = chinchilla.prepare(_synthetic(300))
    spec = chinchilla.make_spec(X, y, scale, meta)
    whole = solver.irls_lm(spec.model(), spec.starts, spec.y, np.ones(spec.n), spec.delta, spec.lower, spec.upper)
    parts = solver.irls_lm_chunked(spec.model(), spec.starts, spec.y, np.ones(spec.n), spec.delta, spec.lower,
                                   spec.upper, max_elements=700)  # 2 problems per batch
    assert np.array_equal(whole.theta, parts.theta) and np.array_equal(whole.fun, parts.fun)
    monkeypatch.setattr(chinchilla, "STARTS_BATCH_ELEMENTS", 1000)
    small = chinchilla.make_spec(X, y, scale, meta)
    assert np.array_equal(small.starts, spec.starts)
    monkeypatch.setattr(common, "MAX_BATCH_ELEMENTS", 5000)  # bootstrap in batches of a few replicates
    sol = common.solve(spec)
    a, _ = common.bootstrap(spec, sol, 20, np.random.default_rng(1))
    monkeypatch.setattr(common, "MAX_BATCH_ELEMENTS", 10**9)
    b, _ = common.bootstrap(spec, sol, 20, np.random.default_rng(1))
    assert np.allclose(a, b, rtol=1e-12, atol=0)


@pytest.mark.slow
def test_chinchilla_fit_memory_is_bounded():
    """30k runs: the grid of 4500 starts used to be one 4500 × 30k array per temporary (~1 GB each)."""
    from planner.fitter import fit_law

    df = _synthetic(30_000)
    tracemalloc.start()
    try:
        res = fit_law("chinchilla", df, bootstrap=10, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400e6, f"peak {peak / 1e6:.0f} MB"
    assert res.values["alpha"] == pytest.approx(0.3473, rel=0.02) and res.values["E"] == pytest.approx(1.8172, rel=0.01)
    assert "start_search" in res.meta and res.meta["n_starts"] <= 6


# ------------------------------------------------------------------ 12. big imports, limits in SQL


def test_import_is_column_wise_and_bounded(tmp_path):
    n = 100_000
    df = _synthetic(n)
    f = tmp_path / "big.csv"
    df.assign(parameterization="sp").to_csv(f, index=False)
    db = RunDB(tmp_path / "big.sqlite")
    tracemalloc.start()
    try:
        table = read_table(f)
        plan = prepare_import(table, "big")
        db.import_plan(plan)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert db.count() == n
    assert peak < 200e6, f"peak {peak / 1e6:.0f} MB"  # was ~600 MB of per-row dicts for 100k rows
    got = db.runs(limit=2)
    assert got["run_id"].tolist() == [f"big-{n - 2}", f"big-{n - 1}"]
    assert got["n_params"].tolist() == pytest.approx(df["n_params"].tolist()[-2:], rel=1e-15)


def test_runs_list_limit_is_in_the_query(seeded_db):
    pass

    db = RunDB(seeded_db)
    db.import_frame(pd.DataFrame({"n_params": [1e6] * 50, "n_tokens": [2e7] * 50, "loss": [3.0] * 50}), "more")
    seen = []
    with mock.patch.object(RunDB, "_make_engine", autospec=True,
                           side_effect=lambda self, orig=RunDB._make_engine: _spy(orig(self), seen)):
        code, out, err = _cli("runs", "list", "--limit", "2", "--json", "--db", seeded_db)
    assert code == 0, err
    assert [r["run_id"] for r in json.loads(out)] == ["more-48", "more-49"]
    runs_queries = [s for s in seen if "FROM runs" in s and "run_id" in s and "count" not in s.lower()]
    assert runs_queries and all("LIMIT" in s for s in runs_queries[-1:]), runs_queries


def _spy(engine, seen):
    import sqlalchemy as sa

    sa.event.listen(engine, "before_cursor_execute", lambda conn, cur, stmt, *a: seen.append(stmt))
    return engine


# ------------------------------------------------------------------ 13. broken pipe, MemoryError


def test_a_closed_pipe_exits_0(tmp_path):
    """`cp-plan runs show ID --curve | head -1`: the reader leaves after one line while the
    command is still printing (one console line per curve point)."""
    db = RunDB(tmp_path / "curve.sqlite")
    rid = db.start_run({"a": 1}, "h1", n_params=1e6)
    db.add_curve(rid, [dict(step=i, train_loss=3.0, val_loss=3.0, lr=1e-3, n_tokens=i * 100.0) for i in range(3000)])
    db.finish_run(rid, "done", loss=3.0)
    args = [PY, "-c", "import cli; cli.main()", "runs", "show", rid, "--curve", "--db", str(tmp_path / "curve.sqlite")]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert first and err == ""


def test_memory_error_is_one_line(seeded_db, monkeypatch):
    monkeypatch.setattr(RunDB, "runs", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    code, _, err = _cli("runs", "list", "--db", seeded_db)
    _one_line_error(code, err)
    assert "out of memory" in err


# ------------------------------------------------------------------ duplicate names, sources, nesting, encodings, damaged databases


@pytest.mark.parametrize("name, text", [
    ("dup.csv", "n_params,n_tokens,loss,loss\n1e6,2e7,3.1,2.9\n"),
    ("dup.jsonl", '{"n_params": 1e6, "n_tokens": 2e7, "loss": 3.1, "loss": 2.9}\n'),
])
def test_duplicate_columns_or_keys_are_refused(seeded_db, tmp_path, name, text):
    """Issue 17 item 5: CSV headers and JSONL keys named twice (pandas and json keep one silently)."""
    bad = tmp_path / name
    bad.write_text(text)
    before = _state(seeded_db)
    code, out, err = _cli("runs", "import", str(bad), "--db", str(seeded_db))
    _one_line_error(code, err)
    assert "loss" in err and "twice" in err
    assert _state(seeded_db) == before


@pytest.mark.parametrize("source", ["evil\n", "a\nb", "x\r"])
def test_source_with_a_newline_is_refused(seeded_db, tmp_path, source):
    good = tmp_path / "ok.csv"
    good.write_text("n_params,n_tokens,loss\n1e6,2e7,3.1\n")
    before = _state(seeded_db)
    code, out, err = _cli("runs", "import", str(good), "--db", str(seeded_db), "--source", source)
    assert code != 0 and "source" in err
    assert _state(seeded_db) == before


def test_export_then_import_keeps_the_flop_convention(tmp_path):
    src = RunDB(tmp_path / "a.sqlite")
    cfg = {"parameterization": "completep", "n_embd": 64, "n_layer": 2, "n_params": 98_432.0, "n_tokens": 2e6}
    rid = src.start_run(cfg, "h1", n_params=98_432.0, n_tokens=2e6, flops=1.5e12, flop_convention="6P+6NV+12LNT")
    src.finish_run(rid, "done", loss=3.0)
    out = tmp_path / "runs.csv"
    code, _, err = _cli("runs", "export", "--db", str(tmp_path / "a.sqlite"), "--out", str(out))
    assert code == 0, err
    code, _, err = _cli("runs", "import", str(out), "--db", str(tmp_path / "b.sqlite"))
    assert code == 0, err
    got = RunDB(tmp_path / "b.sqlite").runs(statuses=None)
    assert got["flop_convention"].tolist() == ["6P+6NV+12LNT"] and got["flops"].tolist() == [1.5e12]


def _deep_json(path: Path) -> Path:
    path.write_text("[" * 100_000 + "]" * 100_000)
    return path


@pytest.mark.parametrize("make, args, match", [
    (lambda p: _deep_json(p / "deep.json"), ["recommend", "--hardware", "{f}"], "nested too deeply"),
    (lambda p: _deep_json(p / "deep.json"), ["recommend", "--laws", "{f}"], "nested too deeply"),
    (lambda p: _deep_json(p / "deep.json"), ["sweep", "file", "{f}", "--dry-run"], "nested too deeply"),
    (lambda p: (p / "hw.toml").write_bytes(b'name = "caf\xe9"\nobjective = "loss"\n') and p / "hw.toml",
     ["recommend", "--hardware", "{f}"], "not UTF-8"),
    (lambda p: None, ["fit", "--law", "compute", "--seed", "-1"], "--seed -1"),
])
def test_deep_nesting_latin1_profiles_and_a_negative_seed_are_one_line_errors(tmp_path, make, args, match):
    """Issue 17 item 6: deep nesting, Latin-1 profiles and a negative seed (each a traceback before)."""
    f = make(tmp_path)
    code, out, err = _cli(*[a.format(f=f) for a in args])
    _one_line_error(code, err)
    assert match in err


def test_where_beyond_sqlite_integers_compares_as_a_number(seeded_db):
    code, out, err = _cli("runs", "list", "--where", "n_layer>1e19", "--db", seeded_db, "--json")
    assert code == 0, err
    assert json.loads(out) == []


def test_a_non_utf8_byte_in_where_is_a_one_line_error(seeded_db):
    """Issue 17 item 6: a byte the terminal could not decode reaches typer surrogate-escaped."""
    code, out, err = _cli("runs", "list", "--where", "source=\udcff", "--db", seeded_db)
    _one_line_error(code, err)
    assert "UTF-8" in err


def test_a_csv_cell_over_128_kib_round_trips(tmp_path):
    """Issue 17 item 8: what `runs export` writes, `runs import` reads (the csv module stops at 128 KiB)."""
    big = tmp_path / "big.csv"
    pd.DataFrame({"n_params": [1e6], "n_tokens": [2e7], "loss": [3.0], "note": ["x" * 140_000]}).to_csv(big, index=False)
    code, out, err = _cli("runs", "import", str(big), "--db", str(tmp_path / "b.sqlite"))
    assert code == 0, err
    notes = RunDB(tmp_path / "b.sqlite").runs(statuses=None)["note"].tolist()
    assert len(notes[0]) == 140_000


LONG = "a" * 300


@pytest.mark.parametrize("args", [
    ["runs", "list", "--db", "{t}/" + LONG + ".sqlite"],
    ["recommend", "--hardware", "{t}/" + LONG + ".toml"],
    ["fit", "--law", "compute", "--db", "{t}/" + LONG + ".sqlite"],
    ["runs", "snapshot", "{t}/" + LONG + ".sqlite", "--db", "{db}"],
    ["runs", "import", "{t}/" + LONG + ".csv", "--db", "{db}"],
])
def test_file_names_over_255_bytes_are_one_line_errors(tmp_path, seeded_db, args):
    """Issue 17 item 6: ENAMETOOLONG anywhere (not only --out) is one line naming the path, shortened."""
    before = _state(seeded_db)
    code, out, err = _cli(*[a.format(t=tmp_path, db=seeded_db) for a in args])
    _one_line_error(code, err)
    assert "too long" in err and "300" not in err.split("(")[0] and "characters" in err
    assert _state(seeded_db) == before


def _dump(path: Path) -> str:
    """The database's content as SQL (the file's bytes also change when a WAL is checkpointed)."""
    import sqlite3

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


def _damage(path: Path, sql: str) -> None:
    import sqlite3

    con = sqlite3.connect(path)
    con.executescript(sql)
    con.commit()
    con.close()


@pytest.mark.parametrize("sql, match", [
    ("UPDATE runs SET loss = 'abc'", "loss = 'abc', not a number"),
    ("UPDATE runs SET loss = x'00ff'", "not a number"),
    ("UPDATE runs SET n_layer = 'deep'", "n_layer = 'deep', not a whole number"),
    ("UPDATE runs SET extra_json = '{broken'", "extra_json"),
    ("UPDATE runs SET extra_json = '[1, 2]'", "not a JSON object"),
    ("UPDATE meta SET value = 'abc' WHERE key = 'schema_version'", "schema_version='abc'"),
])
@pytest.mark.parametrize("command", [["runs", "list"], ["runs", "export", "--out", "{t}/x.csv"],
                                     ["fit", "--law", "compute", "--bootstrap", "0"]])
def test_a_hand_edited_database_is_one_line_and_left_alone(tmp_path, seeded_db, sql, match, command):
    """Issue 17 item 6: values cp-plan never writes (text in a number column, JSON that is not
    JSON, a schema version that is not a number) name the run and column; nothing changes."""
    _damage(seeded_db, sql)
    before = _dump(seeded_db)
    code, out, err = _cli(*[a.format(t=tmp_path) for a in command], "--db", seeded_db)
    _one_line_error(code, err)
    assert "is damaged" in err and match in err, err
    assert _dump(seeded_db) == before


def test_nested_config_json_is_one_line(tmp_path, seeded_db):
    _damage(seeded_db, "UPDATE runs SET config_json = '" + "[" * 5000 + "]" * 5000 + "'")
    code, out, err = _cli("runs", "list", "--json", "--db", seeded_db)
    _one_line_error(code, err)
    assert "nested too deeply" in err


@pytest.mark.parametrize("command", ["recommend", "predict", "next", "fit"])
@pytest.mark.parametrize("n", ["-1", "99999999999", "10001"])
def test_bootstrap_is_bounded_before_anything_runs(command, n):
    """Issue 17 item 9: --bootstrap 99999999999 ran unbounded."""
    extra = {"predict": ["--n-embd", "64", "--n-layer", "2"], "next": ["--budget-flops", "1e15"],
             "fit": ["--law", "compute"]}.get(command, [])
    code, out, err = _cli(command, *extra, "--bootstrap", n)
    _one_line_error(code, err)
    assert "--bootstrap" in err and "10000" in err


def test_read_only_sqlite_url_is_refused_by_writers_and_read_by_readers(tmp_path, seeded_db):
    """Issue 17 item 9: --db 'sqlite:///x?mode=ro' wrote anyway."""
    csv = tmp_path / "r.csv"
    csv.write_text("n_params,n_tokens,loss\n1e6,2e7,3.1\n")
    target = tmp_path / "new.sqlite"
    code, out, err = _cli("runs", "import", str(csv), "--db", f"sqlite:///{target}?mode=ro")
    _one_line_error(code, err)
    assert "mode=ro" in err and not target.exists()
    before = _state(seeded_db)
    code, out, err = _cli("runs", "import", str(csv), "--db", f"sqlite:///{seeded_db}?mode=ro")
    _one_line_error(code, err)
    assert _state(seeded_db) == before
    code, out, err = _cli("runs", "list", "--json", "--db", f"sqlite:///{seeded_db}?mode=ro")
    assert code == 0 and len(json.loads(out)) == 1


def test_sweep_dry_run_on_a_damaged_or_newer_database_is_an_error(tmp_path, seeded_db):
    """Issue 17 item 9: it said '0 already in the database' and exited 0; a missing database still holds none."""
    sweep = tmp_path / "s.json"
    sweep.write_text(json.dumps({"runs": [{"parameterization": "completep", "n_embd": 64, "n_layer": 2,
                                           "n_tokens": 100_000}]}))
    code, out, err = _cli("sweep", "file", str(sweep), "--dry-run", "--db", tmp_path / "none.sqlite")
    assert code == 0 and "0 already in the database" in out
    _damage(seeded_db, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    code, out, err = _cli("sweep", "file", str(sweep), "--dry-run", "--db", seeded_db)
    _one_line_error(code, err)
    assert "newer" in err
    (tmp_path / "junk.sqlite").write_bytes(os.urandom(4096))
    code, out, err = _cli("sweep", "file", str(sweep), "--dry-run", "--db", tmp_path / "junk.sqlite")
    _one_line_error(code, err)


@pytest.mark.parametrize("field, value, match", [
    ("checkpoint_dir", "/etc", "leaves the current folder"),
    ("checkpoint_dir", "data/../../x", "leaves the current folder"),
    ("corpus", "/dev/zero", "not a regular file"),
    ("corpus", "/no/such/corpus.txt", "does not exist"),
])
def test_sweep_file_paths_are_confined(tmp_path, field, value, match):
    """Issue 17 item 9: a sweep file's checkpoint_dir (written) stays below the current folder;
    its corpus (read) may be anywhere but must be a regular file."""
    sweep = tmp_path / "s.json"
    sweep.write_text(json.dumps({"runs": [{"parameterization": "completep", "n_embd": 64, "n_layer": 2,
                                           "n_tokens": 100_000, field: value}]}))
    code, out, err = _cli("sweep", "file", str(sweep), "--dry-run", "--db", tmp_path / "none.sqlite")
    _one_line_error(code, err)
    assert match in err


def test_nested_extras_are_stored_as_json_text(tmp_path):
    """Issue 17 items 6 and 9: JSONL objects and Parquet list columns were Python repr strings
    (or a traceback); they are stored as JSON text that reads back with json.loads."""
    jl = tmp_path / "n.jsonl"
    jl.write_text(json.dumps({"n_params": 1e6, "n_tokens": 2e7, "loss": 3.0, "meta": {"a": [1, 2]},
                              "tags": ["x", "y"]}) + "\n")
    code, out, err = _cli("runs", "import", str(jl), "--db", tmp_path / "a.sqlite")
    assert code == 0, err
    got = RunDB(tmp_path / "a.sqlite").runs(statuses=None)
    assert json.loads(got["meta"][0]) == {"a": [1, 2]} and json.loads(got["tags"][0]) == ["x", "y"]
    pq = tmp_path / "l.parquet"
    pd.DataFrame({"n_params": [1e6, 2e6], "n_tokens": [2e7, 4e7], "loss": [3.0, 2.9],
                  "hist": [[1.0, 2.0], [3.0]]}).to_parquet(pq)
    code, out, err = _cli("runs", "import", str(pq), "--db", tmp_path / "b.sqlite")
    assert code == 0, err
    got = RunDB(tmp_path / "b.sqlite").runs(statuses=None)
    assert [json.loads(v) for v in got["hist"]] == [[1.0, 2.0], [3.0]]


def test_chinchilla_fit_prints_no_runtime_warning(tmp_path):
    """Issue 17 item 9: `fit --law chinchilla` printed a numpy RuntimeWarning; warnings are errors here."""
    raw = pd.read_csv(ROOT / "tests" / "data" / "epoch_chinchilla.csv")
    csv = tmp_path / "ep.csv"
    pd.DataFrame({"n_params": raw["Model Size"], "flops": raw["Training FLOP"], "loss": raw["loss"]}).to_csv(csv, index=False)
    db = tmp_path / "e.sqlite"
    assert _cli("runs", "import", str(csv), "--db", db)[0] == 0
    for target in (db, DEFAULT_DB_PATH):
        r = subprocess.run([PY, "-W", "error::RuntimeWarning", "-m", "cli", "fit", "--law", "chinchilla",
                            "--bootstrap", "50", "--db", str(target)], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr[-2000:]
