"""`cp-plan runs list|show|export|import`: thin commands over planner.db, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner.db import CANONICAL_COLUMNS, RunDB
from conftest import one_line_error as _one_line_error, run_cli

DATA = Path(__file__).parent / "data"
EPOCH_CSV = DATA / "epoch_chinchilla.csv"
EPOCH_RENAMES = ["--rename", "Model Size=n_params", "--rename", "Training FLOP=flops"]




def test_list_refuses_a_missing_database(capsys, monkeypatch, dbpath):
    code, out, err = run_cli("runs", "list", "--db", dbpath)
    _one_line_error(code, err, f"no run database at {dbpath}; train or import runs first")
    assert not dbpath.exists() and out == ""


def test_import_epoch_then_list_show_json(capsys, monkeypatch, dbpath):
    code, out, err = run_cli("runs", "import", EPOCH_CSV, "--source", "epoch-chinchilla",
                         *EPOCH_RENAMES, "--db", dbpath, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["imported"] == 245 and summary["derived_n_tokens"] == 245 and summary["derived_flops"] == 0
    assert summary["extra_columns"] == ["x", "y", "color", "hex_color"]

    code, out, err = run_cli("runs", "list", "--db", dbpath, "--json")
    rows = json.loads(out)
    raw = pd.read_csv(EPOCH_CSV)
    assert code == 0 and len(rows) == 245 and list(rows[0]) == list(CANONICAL_COLUMNS) + ["seq_len", "seed"]
    np.testing.assert_allclose([r["n_tokens"] for r in rows], raw["Training FLOP"] / (6 * raw["Model Size"]), rtol=1e-15)
    assert rows[0]["n_embd"] is None and rows[0]["source"] == "epoch-chinchilla"

    code, out, _ = run_cli("runs", "show", "epoch-chinchilla-4", "--db", dbpath, "--json")
    shown = json.loads(out)
    assert shown["run"]["loss"] == raw["loss"][4] and shown["run"]["hex_color"] == raw["hex_color"][4]
    assert shown["curve_summary"] == {"n_points": 0} and shown["config"] is None

    code, out, _ = run_cli("runs", "list", "--db", dbpath, "--limit", "2")
    assert code == 0 and "2 runs in" in out and "epoch-chinchilla-244" in out and "epoch-chinchilla-242" not in out


def test_second_import_of_same_table_is_refused_and_changes_nothing(capsys, monkeypatch, dbpath):
    args = ["runs", "import", EPOCH_CSV, "--source", "epoch", *EPOCH_RENAMES, "--db", dbpath]
    assert run_cli(*args)[0] == 0
    fp = RunDB(dbpath).fingerprint()
    code, _, err = run_cli(*args)
    _one_line_error(code, err, "245 run_id(s) already in", "nothing was imported")
    assert RunDB(dbpath).count() == 245 and RunDB(dbpath).fingerprint() == fp


def test_csv_missing_required_column_leaves_database_unchanged(capsys, monkeypatch, dbpath, tmp_path):
    assert run_cli("runs", "import", EPOCH_CSV, "--source", "epoch", *EPOCH_RENAMES, "--db", dbpath)[0] == 0
    fp = RunDB(dbpath).fingerprint()
    no_compute = tmp_path / "no_compute.csv"  # 'Training FLOP' would be recognised as flops: drop it
    pd.read_csv(EPOCH_CSV).drop(columns=["Training FLOP"]).to_csv(no_compute, index=False)
    code, _, err = run_cli("runs", "import", no_compute, "--source", "again",
                       "--rename", "Model Size=n_params", "--db", dbpath)  # no tokens or FLOPs column
    _one_line_error(code, err, "lacks required column(s) n_tokens or flops", "--rename")
    assert RunDB(dbpath).count() == 245 and RunDB(dbpath).fingerprint() == fp


def test_bad_row_error_names_row_column_and_value(capsys, monkeypatch, dbpath, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("N,C,loss\n1e6,1.2e14,3.1\n2e6,-2.4e14,3.0\n4e6,4.8e14,oops\n")
    code, _, err = run_cli("runs", "import", bad, "--source", "mine",
                       "--rename", "N=n_params", "--rename", "C=flops", "--db", dbpath)
    _one_line_error(code, err, "2 of 3 row(s) are bad", "row 2, column 'flops': value '-2.4e14' is not positive",
                    "row 3, column 'loss': value 'oops' is not a number")
    assert RunDB(dbpath).count() == 0


@pytest.mark.parametrize("args, fragment", [
    (["--rename", "Size=n_params"], "has no column 'Size'"),
    (["--rename", "Model Size"], "not of the form KEY=VALUE"),
    (["--source", "trained"], "reserved for runs cp-plan trains"),
])
def test_bad_import_options(capsys, monkeypatch, dbpath, args, fragment):
    base = ["runs", "import", EPOCH_CSV, "--db", dbpath]
    if "--source" not in args:
        base += ["--source", "x"]
    code, _, err = run_cli(*base, *args)
    _one_line_error(code, err, fragment)


def test_import_missing_file_and_bad_extension(capsys, monkeypatch, dbpath, tmp_path):
    code, _, err = run_cli("runs", "import", tmp_path / "none.csv", "--source", "x", "--db", dbpath)
    _one_line_error(code, err, "no file at")
    (tmp_path / "runs.xlsx").write_text("x")
    code, _, err = run_cli("runs", "import", tmp_path / "runs.xlsx", "--source", "x", "--db", dbpath)
    _one_line_error(code, err, "use one of .csv, .jsonl")


def test_set_where_and_status_filters(capsys, monkeypatch, dbpath, tmp_path):
    table = tmp_path / "t.jsonl"
    table.write_text("\n".join(json.dumps(r) for r in [
        {"run_id": "r1", "n_params": 1e6, "n_tokens": 2e7, "loss": 3.2, "n_layer": 2},
        {"run_id": "r2", "n_params": 1e6, "n_tokens": 2e7, "loss": 3.1, "n_layer": 4},
        {"run_id": "r3", "n_params": 1e6, "n_tokens": 2e7, "loss": None, "n_layer": 8, "status": "diverged"},
    ]) + "\n")
    code, _, err = run_cli("runs", "import", table, "--source", "grid",
                       "--set", "parameterization=completep", "--set", "alpha=1", "--db", dbpath)
    assert code == 0, err
    code, out, _ = run_cli("runs", "list", "--db", dbpath, "--json", "--where", "n_layer=4")
    assert [r["run_id"] for r in json.loads(out)] == ["r2"]
    code, out, _ = run_cli("runs", "list", "--db", dbpath, "--json", "--status", "diverged")
    rows = json.loads(out)
    assert [r["run_id"] for r in rows] == ["r3"] and rows[0]["loss"] is None
    code, out, _ = run_cli("runs", "list", "--db", dbpath, "--json",
                       "--where", "parameterization=completep", "--where", "n_layer=2", "--where", "n_layer=8")
    rows = json.loads(out)
    assert [r["run_id"] for r in rows] == ["r1", "r3"] and {r["alpha"] for r in rows} == {1.0}
    assert all(r["flops"] == 6 * 1e6 * 2e7 for r in rows)
    code, _, err = run_cli("runs", "list", "--db", dbpath, "--where", "n_layer=four")
    _one_line_error(code, err, "n_layer is numeric")
    code, _, err = run_cli("runs", "list", "--db", dbpath, "--status", "finished")
    assert code == 2 and "Traceback" not in err  # a bad choice is a usage error


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_export_then_import_round_trips_exactly(capsys, monkeypatch, dbpath, tmp_path, ext):
    rdb = RunDB(dbpath)
    rdb.import_frame(pd.read_csv(EPOCH_CSV).rename(columns={"Model Size": "n_params", "Training FLOP": "flops"}), "epoch")
    rid = rdb.start_run({"n_embd": 64, "n_layer": 4, "parameterization": "completep"}, "h", n_params=201_088.0)
    rdb.finish_run(rid, "done", loss=3.25, n_tokens=2e5, flops=1.5e12)
    out = tmp_path / f"runs.{ext}"
    code, stdout, err = run_cli("runs", "export", "--out", out, "--db", dbpath)
    assert code == 0 and f"wrote 246 run(s) to {out}" in stdout, err
    exported = {"csv": pd.read_csv, "parquet": pd.read_parquet}.get(ext, lambda p: pd.read_json(p, lines=True))(out)
    assert list(exported.columns) == list(CANONICAL_COLUMNS) + ["flop_convention"]  # flops keep their convention

    other = tmp_path / "other.sqlite"
    code, _, err = run_cli("runs", "import", out, "--source", "copy",
                       "--rename", "source=orig_source", "--db", other)
    assert code == 0, err
    a = RunDB(dbpath).runs().set_index("run_id")
    b = RunDB(other).runs().set_index("run_id")
    assert list(b.index) == list(a.index)
    for col in ("n_params", "n_tokens", "flops", "loss"):
        np.testing.assert_array_equal(b[col].to_numpy(), a[col].to_numpy())  # floats exact, not approximate
    assert b.loc[rid, "n_embd"] == 64 and b.loc[rid, "orig_source"] == "trained" and b.loc[rid, "source"] == "copy"


def test_export_all_columns_and_refusals(capsys, monkeypatch, dbpath, tmp_path):
    rdb = RunDB(dbpath)
    rid = rdb.start_run({"n_embd": 64, "seed": 3}, "h", n_params=1.0e5)
    out = tmp_path / "all.csv"
    code, _, err = run_cli("runs", "export", "-o", out, "--all-columns", "--status", "running", "--db", dbpath)
    assert code == 0, err
    df = pd.read_csv(out)
    assert df["run_id"].tolist() == [rid] and json.loads(df["config_json"][0]) == {"n_embd": 64, "seed": 3}
    code, _, err = run_cli("runs", "export", "-o", tmp_path / "missing" / "x.csv", "--db", dbpath)
    _one_line_error(code, err, "does not exist")
    code, _, err = run_cli("runs", "export", "-o", out, "--db", tmp_path / "absent.sqlite")
    _one_line_error(code, err, "no run database at")


def test_show_trained_run_with_curve(capsys, monkeypatch, dbpath):
    rdb = RunDB(dbpath)
    rid = rdb.start_run({"n_embd": 64, "n_layer": 2, "lr": 0.01}, "h", n_params=1e5)
    rdb.add_curve(rid, [{"step": 0, "train_loss": 5.5, "n_tokens": 0}, {"step": 10, "train_loss": 3.0, "val_loss": 3.1, "n_tokens": 10240}])
    rdb.finish_run(rid, "done", loss=3.1)
    code, out, _ = run_cli("runs", "show", rid[:5], "--db", dbpath, "--json", "--curve")
    shown = json.loads(out)
    assert code == 0 and shown["run"]["run_id"] == rid and shown["config"] == {"n_embd": 64, "n_layer": 2, "lr": 0.01}
    assert shown["curve_summary"]["last_val_loss"] == 3.1 and [p["step"] for p in shown["curve"]] == [0, 10]
    code, out, _ = run_cli("runs", "show", rid, "--db", dbpath)
    assert code == 0 and f"run {rid} (done)" in out and "min_val_loss=3.1" in out
    code, _, err = run_cli("runs", "show", "zzz", "--db", dbpath)
    _one_line_error(code, err, "no run 'zzz'")


def test_console_script_error_is_one_line(tmp_path):
    """The installed entry point, as a user runs it: bad CSV → one stderr line, exit 1."""
    bad = tmp_path / "bad.csv"
    bad.write_text("n_params,loss\n1e6,3.0\n")
    proc = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "runs", "import", str(bad),
                           "--source", "x", "--db", str(tmp_path / "r.sqlite")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "lacks required column(s) n_tokens or flops" in proc.stderr
