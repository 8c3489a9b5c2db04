"""The run database (planner.db): schema, run lifecycle, queries, import validation, concurrency.

Every test runs against SQLite; the backend-neutral ones also run against PostgreSQL when
CP_PLAN_TEST_PG_URL=postgresql://user@host/db is set (each test gets a fresh database; see
conftest.py), and are skipped with that reason otherwise.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_runs

from planner import db as dbmod
from planner.db import CANONICAL_COLUMNS, RunDB, curve_summary, default_db_url
from planner.errors import CpPlanError
from planner.importing import prepare_import
from planner.tableio import EXTRA_COLUMNS, read_table, rename_columns

DATA = Path(__file__).parent / "data"
EPOCH_CSV = DATA / "epoch_chinchilla.csv"
BACKENDS = ["sqlite", "postgresql"]

CONFIG = {"parameterization": "completep", "alpha": 1.0, "n_embd": 64, "n_layer": 4, "d_head": 16,
          "base_n_embd": 64, "base_n_layer": 2, "lr": 3e-3, "init_std": 0.02, "n_tokens": 200_000,
          "batch_size": 16, "seq_len": 64, "seed": 0, "device": "auto"}


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    if request.param == "sqlite":
        rdb = RunDB(tmp_path / "runs.sqlite")
    else:
        rdb = RunDB(request.getfixturevalue("pg_url"))
    yield rdb
    rdb.close()


def _epoch_frame() -> pd.DataFrame:
    return rename_columns(read_table(EPOCH_CSV), [("Model Size", "n_params"), ("Training FLOP", "flops")])


def _table(**cols) -> pd.DataFrame:
    base = {"run_id": ["a", "b", "c"], "n_params": ["1e6", "2e6", "4e6"],
            "n_tokens": ["2e7", "4e7", "8e7"], "loss": ["3.5", "3.2", "3.0"]}
    base.update(cols)
    return pd.DataFrame(base)


# ------------------------------------------------------------------ schema and location


def test_sqlite_schema_and_pragmas_on_first_use(tmp_path):
    path = tmp_path / "new" / "dir" / "runs.sqlite"  # missing parents are created for writing
    rdb = RunDB(path)
    assert path.is_file() and rdb.schema_version == dbmod.SCHEMA_VERSION
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "runs", "curves", "coord_checks"} <= tables
    with rdb.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_read_only_open_refuses_missing_file_and_creates_nothing(tmp_path):
    path = tmp_path / "nope.sqlite"
    with pytest.raises(CpPlanError, match="no run database at .*nope.sqlite; train or import runs first"):
        RunDB(path, create=False)
    assert not path.exists()
    with pytest.raises(CpPlanError, match="is a directory"):
        RunDB(tmp_path)


def test_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "runs.sqlite"
    RunDB(path).close()
    with sqlite3.connect(path) as con:
        con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(CpPlanError, match="schema v99, newer than this cp-plan's v1; upgrade cp-plan"):
        RunDB(path)


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "runs.sqlite"
    path.write_text("this is not sqlite\n" * 100)
    with pytest.raises(CpPlanError, match="not a database"):
        RunDB(path, create=False)


def test_default_location(monkeypatch, tmp_path):
    monkeypatch.delenv("CP_PLAN_DB", raising=False)
    project = Path(dbmod.__file__).resolve().parents[2]  # planner/db/__init__.py
    assert default_db_url() == str(project / "data" / "runs" / "runs.sqlite")
    monkeypatch.setenv("CP_PLAN_DB", str(tmp_path / "env.sqlite"))
    assert RunDB().path == tmp_path / "env.sqlite"


# ------------------------------------------------------------------ run lifecycle


def test_run_lifecycle_round_trip(db):
    rid = db.start_run(CONFIG, "hash-1", n_params=201_088, sweep="single")
    assert len(rid) == 12 and int(rid, 16) >= 0
    run = db.get_run(rid)
    assert run["status"] == "running" and run["source"] == "trained" and run["config"] == CONFIG
    # shape and HP columns come from the config when not passed
    assert (run["n_embd"], run["n_layer"], run["lr"], run["n_tokens"]) == (64, 4, 3e-3, 200_000)
    assert run["worker"].endswith(f":{os.getpid()}")
    db.update_run(rid, step=50, wall_s=1.5)
    db.add_curve(rid, [{"step": 0, "n_tokens": 0, "train_loss": 5.6, "lr": 0.0},
                       {"step": 50, "n_tokens": 51_200, "train_loss": 3.1, "val_loss": 3.2, "lr": 3e-3}])
    db.finish_run(rid, "done", loss=3.05, train_loss=3.0, wall_s=9.5, tokens_per_s=21_000.0)
    run = db.get_run(rid[:6])  # a unique prefix is enough
    assert (run["status"], run["loss"], run["step"], run["wall_s"]) == ("done", 3.05, 50, 9.5)
    curve = db.curve(rid)
    assert curve["step"].tolist() == [0, 50] and curve["val_loss"].isna().tolist() == [True, False]
    summary = curve_summary(curve)
    assert summary["n_points"] == 2 and summary["last_val_loss"] == 3.2 and summary["min_val_loss_step"] == 50
    assert db.find_done("hash-1") == rid
    assert db.find_done("hash-2") is None


def test_find_done_ignores_unfinished_and_diverged(db):
    a = db.start_run(CONFIG, "h")
    assert db.find_done("h") is None
    db.finish_run(a, "diverged", loss=float("nan"), reason="loss is NaN at step 12")
    assert db.find_done("h") is None
    run = db.get_run(a)
    assert run["loss"] is None and run["reason"] == "loss is NaN at step 12"  # NaN stored as missing
    b = db.start_run(CONFIG, "h")
    db.finish_run(b, "done", loss=2.9)
    assert db.find_done("h") == b


def test_bad_writes_are_refused(db):
    rid = db.start_run(CONFIG, "h")
    with pytest.raises(CpPlanError, match="cannot be 'done' without a finite final loss"):
        db.finish_run(rid, "done")
    with pytest.raises(CpPlanError, match="status 'finished' is not one of done, diverged, failed"):
        db.finish_run(rid, "finished", loss=3.0)
    with pytest.raises(CpPlanError, match="unknown column 'n_embed'"):
        db.update_run(rid, n_embed=64)
    with pytest.raises(CpPlanError, match="n_layer=2.5 is not an integer"):
        db.update_run(rid, n_layer=2.5)
    with pytest.raises(CpPlanError, match="no run 'missing'"):
        db.finish_run("missing", "failed", reason="x")
    with pytest.raises(CpPlanError, match="no run 'missing'"):
        db.add_curve("missing", [{"step": 1, "train_loss": 3.0}])
    with pytest.raises(CpPlanError, match="already exists"):
        db.start_run(CONFIG, "h", run_id=rid)
    assert db.get_run(rid)["status"] == "running"  # none of the refused writes changed it


def test_add_curve_replaces_relogged_steps(db):
    rid = db.start_run(CONFIG, "h")
    db.add_curve(rid, [{"step": s, "train_loss": 5.0 - s / 100} for s in (0, 10, 20)])
    db.add_curve(rid, [{"step": s, "train_loss": 1.0} for s in (10, 20, 30)])  # resumed from step 10
    curve = db.curve(rid)
    assert curve["step"].tolist() == [0, 10, 20, 30]
    assert curve["train_loss"].tolist() == [5.0, 1.0, 1.0, 1.0]


def test_runs_frame_columns_dtypes_and_filters(db):
    ids = []
    for n_layer, status in [(2, "done"), (4, "done"), (8, "failed")]:
        rid = db.start_run({**CONFIG, "n_layer": n_layer}, f"h{n_layer}", n_params=1000.0 * n_layer)
        db.finish_run(rid, status, **({"loss": 4.0 - n_layer / 10} if status == "done" else {"reason": "boom"}))
        ids.append(rid)
    df = db.runs()
    assert list(df.columns[: len(CANONICAL_COLUMNS)]) == list(CANONICAL_COLUMNS)
    assert list(df.columns) == list(CANONICAL_COLUMNS) + list(EXTRA_COLUMNS)
    assert df["run_id"].tolist() == ids[:2]  # default: done only, in insertion order
    for col in ("n_params", "n_tokens", "loss", "lr", "alpha"):
        assert df[col].dtype == np.float64
    assert df["n_layer"].dtype == np.int64 and df["n_head"].dtype == np.float64  # n_head never given
    assert len(db.runs(statuses=None)) == 3 and db.runs(statuses="failed")["run_id"].tolist() == [ids[2]]
    assert db.runs(where={"n_layer": "4"})["run_id"].tolist() == [ids[1]]  # strings parsed for numbers
    assert db.runs(where={"n_layer": [2, 4]})["run_id"].tolist() == ids[:2]
    assert db.runs(where={"reason": None}, statuses=None)["run_id"].tolist() == ids[:2]
    with pytest.raises(CpPlanError, match="unknown column 'layers'"):
        db.runs(where={"layers": 4})
    with pytest.raises(CpPlanError, match="status 'ok' is not one of"):
        db.runs(statuses=("ok",))


def test_empty_database_frame_has_typed_columns(db):
    df = db.runs(statuses=None)
    assert len(df) == 0 and list(df.columns[:13]) == list(CANONICAL_COLUMNS)
    assert df["loss"].dtype == np.float64


def test_fingerprint_changes_on_every_write_only(db, tmp_path):
    seen = [db.fingerprint()]
    rid = db.start_run(CONFIG, "h")
    seen.append(db.fingerprint())
    db.update_run(rid, step=1)
    seen.append(db.fingerprint())
    db.update_run(rid, step=1)  # same values again: still a write, still a new fingerprint
    seen.append(db.fingerprint())
    db.finish_run(rid, "done", loss=3.0)
    seen.append(db.fingerprint())
    db.import_frame(_table(), "tiny")
    seen.append(db.fingerprint())
    assert len(set(seen)) == len(seen)
    db.runs(statuses=None), db.get_run(rid), db.curve(rid)
    assert db.fingerprint() == seen[-1]
    assert RunDB(tmp_path / "other.sqlite").fingerprint() != RunDB(tmp_path / "other2.sqlite").fingerprint()


def test_coord_rows_round_trip(db):
    rows = [{"check_id": "c1", "parameterization": p, "alpha": a, "n_embd": 64, "n_layer": L, "step": s,
             "resid_abs_mean": 0.1 * L * (p == "mup") + 1.0, "logits_abs_mean": 0.5, "axis": "depth"}
            for p, a in [("mup", None), ("completep", 1.0)] for L in (2, 8) for s in (1, 2)]
    db.add_coord_rows(rows)
    df = db.coord_rows({"parameterization": "mup"})
    assert len(df) == 4 and df["n_layer"].tolist() == [2, 2, 8, 8] and df["created_at"].notna().all()
    assert len(db.coord_rows()) == 8 and len(db.coord_rows({"check_id": "other"})) == 0
    with pytest.raises(CpPlanError, match="axis 'height' is not one of depth, width"):
        db.add_coord_rows([{**rows[0], "axis": "height"}])
    with pytest.raises(CpPlanError, match="lacks step"):
        db.add_coord_rows([{k: v for k, v in rows[0].items() if k != "step"}])


# ------------------------------------------------------------------ import


def test_epoch_chinchilla_import(db):
    n = db.import_frame(_epoch_frame(), "epoch-chinchilla")
    assert n == 245
    df = db.runs()
    raw = pd.read_csv(EPOCH_CSV)
    assert len(df) == 245 and (df["source"] == "epoch-chinchilla").all() and (df["status"] == "done").all()
    assert df["run_id"].tolist() == [f"epoch-chinchilla-{i}" for i in range(245)]  # file order kept
    np.testing.assert_array_equal(df["n_params"], raw["Model Size"])
    np.testing.assert_array_equal(df["flops"], raw["Training FLOP"])
    np.testing.assert_allclose(df["n_tokens"], raw["Training FLOP"] / (6 * raw["Model Size"]), rtol=1e-15)
    assert (df["flop_convention"] == "6ND").all()
    np.testing.assert_array_equal(df["x"], raw["x"])  # extra columns kept, numbers as numbers
    assert df["hex_color"].iloc[0] == raw["hex_color"].iloc[0]


def test_import_derives_flops_and_keeps_given_convention(db):
    db.import_frame(_table(flop_convention=["6ND", None, "6P+6NV+12LNT"]), "t")
    df = db.runs()
    np.testing.assert_allclose(df["flops"], 6 * df["n_params"] * df["n_tokens"], rtol=1e-15)
    assert df["flop_convention"].tolist() == ["6ND", "6ND", "6P+6NV+12LNT"]


def test_import_status_and_set_values(db):
    table = _table(status=["done", "diverged", "failed"], loss=["3.0", "inf", None], parameterization="sp")
    assert db.import_frame(table, "t") == 3
    df = db.runs(statuses=None)
    assert df["status"].tolist() == ["done", "diverged", "failed"]
    assert df["loss"].isna().tolist() == [False, True, True]  # a diverged run's inf loss is stored as missing
    assert (df["parameterization"] == "sp").all()


def test_jsonl_and_generated_ids_are_deterministic(db, tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"n_params": 1e6, "flops": 1.2e14, "loss": 3.1}\n\n{"n_params": 2000000, "flops": 2.4e14, "loss": 2.9}\n')
    db.import_frame(read_table(path), "mine")
    df = db.runs()
    assert df["run_id"].tolist() == ["mine-0", "mine-1"] and df["n_tokens"].tolist() == [2e7, 2e7]


BAD_TABLES = [
    (dict(n_params=["1e6", "nan", "4e6"]), r"row 2, column 'n_params': value 'nan' is missing"),
    (dict(n_params=["1e6", "2e6", "-4e6"]), r"row 3, column 'n_params': value '-4e6' is not positive"),
    (dict(n_tokens=["2e7", "0", "8e7"]), r"row 2, column 'n_tokens': value '0' is not positive"),
    (dict(loss=["3.5", "inf", "3.0"]), r"row 2, column 'loss': value 'inf' is not finite"),
    (dict(loss=["3.5", "3.2", None]), r"row 3, column 'loss': .* is missing \(a 'done' run needs"),
    (dict(n_params=["1e6", "lots", "4e6"]), r"row 2, column 'n_params': value 'lots' is not a number"),
    (dict(n_params=[1e6, True, 4e6]), r"row 2, column 'n_params': value True is a boolean"),
    (dict(n_layer=["4", "4.5", "8"]), r"row 2, column 'n_layer': value '4.5' is not an integer"),
    (dict(n_tokens=["2e7", "1e45", "8e7"]), r"row 2, column 'n_tokens': .* larger than 1e\+40"),
    (dict(run_id=["a", "b", "a"]), r"row 3, column 'run_id': value 'a' repeats the run_id of row 1"),
    (dict(status=["done", "running", "done"]), r"row 2, column 'status': value 'running' is not one of"),
    (dict(source=["x", "x", "x"]), r"row 1, column 'source': .* differs from --source"),
]


@pytest.mark.parametrize("cols, message", BAD_TABLES)
def test_bad_rows_refuse_the_whole_import(db, cols, message):
    db.import_frame(_table(run_id=["keep-1", "keep-2", "keep-3"]), "before")
    before = (db.count(), db.fingerprint(), db.runs(statuses=None).to_json())
    with pytest.raises(CpPlanError, match=message) as exc:
        db.import_frame(_table(**cols), "t")
    assert "nothing was imported" in str(exc.value) and "\n" not in str(exc.value)
    assert (db.count(), db.fingerprint(), db.runs(statuses=None).to_json()) == before


def test_all_problems_are_counted_and_the_first_ones_named():
    table = _table(n_params=["-1", "-2", "-3"], loss=["x", "3", "3"])
    with pytest.raises(CpPlanError) as exc:
        prepare_import(table, "t")
    msg = str(exc.value)
    assert msg.startswith("refusing to import: 3 of 3 row(s) are bad")
    assert "row 1, column 'n_params'" in msg and "row 1, column 'loss': value 'x' is not a number" in msg


@pytest.mark.parametrize("table, message", [
    (pd.DataFrame({"n_params": [1.0], "loss": [3.0]}), r"lacks required column\(s\) n_tokens or flops"),
    (pd.DataFrame({"N": [1.0], "D": [2.0], "loss": [3.0]}), r"lacks required column\(s\) n_params, n_tokens or flops; its columns are 'N', 'D', 'loss'; map yours with --rename"),
    (pd.DataFrame({"n_params": [], "n_tokens": [], "loss": []}), "no rows"),
])
def test_missing_columns_and_empty_tables(db, table, message):
    with pytest.raises(CpPlanError, match=message):
        db.import_frame(table, "t")
    assert db.count() == 0


def test_duplicate_against_database_refuses_all(db):
    assert db.import_frame(_epoch_frame(), "epoch") == 245
    fp = db.fingerprint()
    with pytest.raises(CpPlanError, match=r"245 run_id\(s\) already in .*'epoch-0' \(row 1\); nothing was imported"):
        db.import_frame(_epoch_frame(), "epoch")
    mixed = _table(run_id=["new-1", "epoch-7", "new-2"])
    with pytest.raises(CpPlanError, match=r"1 run_id\(s\) already in .*'epoch-7' \(row 2\)"):
        db.import_frame(mixed, "other")
    assert db.count() == 245 and db.fingerprint() == fp


@pytest.mark.parametrize("source", ["trained", "", "has space", "x" * 65])
def test_bad_source_names(db, source):
    with pytest.raises(CpPlanError, match="source"):
        db.import_frame(_table(), source)


# ------------------------------------------------------------------ concurrency


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_writers_lose_no_row(tmp_path, backend, request):
    if backend == "sqlite":
        url = str(tmp_path / "concurrent.sqlite")  # does not exist yet: schema creation races too
    else:
        url = request.getfixturevalue("pg_url")  # an empty database: schema creation races too
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    procs = [ctx.Process(target=write_runs, args=(url, w, 25, CONFIG, 0.01)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    rdb = RunDB(url, create=False)
    df = rdb.runs(statuses=None)
    assert len(df) == 100 and df["run_id"].is_unique and (df["status"] == "done").all()
    assert sorted(df["config_hash"]) == sorted(f"w{w}-{i}" for w in range(4) for i in range(25))
    assert sum(len(rdb.curve(r)) for r in df["run_id"]) == 300
    if backend == "sqlite":
        with sqlite3.connect(url) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert con.execute("SELECT count(DISTINCT seq) FROM runs").fetchone()[0] == 100
