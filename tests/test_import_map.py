"""Imports that recognise their input (planner.importmap): fixtures in the shapes of real exports, written
here: a tracker's checkpoint JSONL, a tracker CSV (Name, State, Runtime, ...) and a paper's table
with embedding-inclusive counts."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli_process

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, check=True):
    proc = run_cli_process(*args)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _loss(p, n, l, tokens):
    return 1.8 + 400 * p ** -0.3 * (1 + 0.03 * (math.log(n / l) - math.log(40)) ** 2) + 300 * tokens ** -0.28


def checkpoint_jsonl(path: Path) -> int:
    """20 shapes x 10 checkpoints, up to ~1.6e9 parameters, as an experiment tracker exports them."""
    rng = np.random.default_rng(0)
    rows = []
    for width in (256, 512, 1024, 2048):
        for depth in (4, 8, 16, 24, 32):
            p = depth * (12 * width ** 2 + 13 * width) + 2 * width
            for k in range(1, 11):
                tokens = 20.0 * p * k / 10
                rows.append({"run_name": f"w{width}-d{depth}", "params_active_precise": p, "width": width,
                             "depth": depth, "tokens": tokens, "step": 100 * k, "num_nodes": 4,
                             "seconds_per_step": 1.5, "final_loss": _loss(p, width, depth, tokens)
                             + 0.003 * rng.standard_normal()})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def _count(db: Path, table: str = "runs") -> int:
    if not db.exists():
        return -1
    with sqlite3.connect(db) as con:
        return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_checkpoint_jsonl_imports_with_only_the_parameterization_and_plans(tmp_path):
    src, db = tmp_path / "sweep.jsonl", tmp_path / "runs.sqlite"
    n_rows = checkpoint_jsonl(src)
    dry = _cli("runs", "import", src, "--set", "parameterization=sp", "--db", db, "--dry-run")
    assert "final_loss -> loss" in dry.stdout and "width -> n_embd" in dry.stdout and "tokens -> n_tokens" in dry.stdout
    assert "params_active_precise -> n_params" in dry.stdout and "would import 20 run(s)" in dry.stdout
    assert "orig_step" in dry.stdout and "checkpoint table" in dry.stdout
    assert not db.exists()  # the dry run wrote nothing
    got = _cli("runs", "import", src, "--set", "parameterization=sp", "--db", db, "--json")
    summary = json.loads(got.stdout)
    assert summary["imported"] == 20 and summary["curves"] == 20 and summary["mapping"]["depth"] == "n_layer"
    assert _count(db, "curves") == n_rows  # every checkpoint kept: the 20 final rows and 180 earlier ones
    runs = pd.read_sql("SELECT run_id, n_tokens, n_params, loss, extra_json FROM runs", sqlite3.connect(db))
    last = runs.set_index("run_id").loc["w2048-d32"]
    assert last["n_tokens"] == pytest.approx(20.0 * last["n_params"])  # the last checkpoint is the run
    assert "orig_step" in last["extra_json"]
    plan = json.loads(_cli("recommend", "--params", "1.5e9", "-p", "sp", "--db", db, "--json").stdout)
    assert plan["parameterization"] == "sp" and abs(plan["n_params"] / 1.5e9 - 1) < 0.1
    every = tmp_path / "every.sqlite"
    got = json.loads(_cli("runs", "import", src, "--set", "parameterization=sp", "--db", every,
                          "--checkpoints", "all", "--json").stdout)
    assert got["imported"] == n_rows and _count(every, "curves") == 0


def test_tracker_csv_maps_its_columns_and_a_rename_onto_an_internal_name_refuses(tmp_path):
    src, db = tmp_path / "wandb_export.csv", tmp_path / "runs.sqlite"
    pd.DataFrame({"Name": ["a", "b", "c"], "State": ["finished", "finished", "crashed"], "Runtime": [100, 200, 5],
                  "d_model": [256, 512, 768], "n_layers": [4, 8, 12], "num_tokens": [2e8, 4e8, 6e8],
                  "val_loss": [3.1, 2.9, 2.8], "learning_rate": [6e-4, 6e-4, 3e-4]}).to_csv(src, index=False)
    got = _cli("runs", "import", src, "--param-count", "gpt2-12N2", "--db", db)
    assert "d_model -> n_embd" in got.stdout and "val_loss -> loss" in got.stdout and "learning_rate -> lr" in got.stdout
    assert _count(db) == 3
    bad = _cli("runs", "import", src, "--param-count", "gpt2-12N2", "--rename", "Runtime=step", "--db",
               tmp_path / "x.sqlite", check=False)
    assert bad.returncode == 1 and "internal" in bad.stderr and bad.stderr.count("\n") == 1
    assert not (tmp_path / "x.sqlite").exists()


def test_paper_table_with_embedding_inclusive_counts_warns(tmp_path):
    src, db = tmp_path / "paper.csv", tmp_path / "runs.sqlite"
    widths, depths = np.array([768, 1024, 1280]), np.array([12, 24, 36])
    total = depths * (12 * widths ** 2 + 13 * widths) + 2 * widths + 50257 * widths + 1024 * widths
    pd.DataFrame({"Parameters": total, "hidden_size": widths, "num_layers": depths, "Tokens": 20 * total,
                  "Loss": [3.3, 3.0, 2.9]}).to_csv(src, index=False)
    got = _cli("runs", "import", src, "--db", db)
    assert "Parameters -> n_params" in got.stdout and "embedding" in got.stdout
    got = _cli("runs", "import", src, "--db", tmp_path / "net.sqlite", "--subtract-embeddings", "50257",
               "--learned-positions", "--set", "seq_len=1024")
    assert "warning" not in got.stdout


def test_checkpoint_rows_with_an_integer_beyond_float_range_fold_without_a_traceback(tmp_path):
    """Found by the hypothesis import test: a JSON integer too large for a float in an earlier checkpoint."""
    src = tmp_path / "ov.jsonl"
    src.write_text('{"run_name": "a", "n_params": 1000, "n_tokens": 2e4, "loss": 1' + "0" * 400 + '}\n'
                   '{"run_name": "a", "n_params": 1000, "n_tokens": 4e4, "loss": 3.0}\n')
    got = _cli("runs", "import", src, "--db", tmp_path / "ov.sqlite", "--json")
    assert json.loads(got.stdout)["imported"] == 1
