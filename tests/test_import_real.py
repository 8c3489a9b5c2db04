"""Imports of real data (planner.importing, planner.tableio): parameter counts of other architectures,
embedding-inclusive counts, `runs export` -> `runs import` round trips, `--where` comparisons,
and imported runs without a base shape or LR going through every law and the planner.

Published counts used as ground truth: GPT-2 (Radford et al. 2019; Hugging Face `gpt2*` configs,
tied embeddings, learned positions, vocabulary 50257, context 1024) has 124,439,808,
354,823,168, 774,030,080 and 1,557,611,200 parameters; LLaMA 7B and 13B (Touvron et al. 2023;
untied, rotary, vocabulary 32000) have 6,738,415,616 and 13,015,864,320.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner.db import CANONICAL_COLUMNS, RUN_COLUMNS, RunDB
from planner.shapes import n_params_nonembedding, shape_for_params
from planner.tableio import count_params, is_cp_plan_export, source_from_path, swiglu_hidden
from conftest import one_line_error as _one_line_error, run_cli

DATA = Path(__file__).parent / "data"
EPOCH_CSV = DATA / "epoch_chinchilla.csv"

GPT2 = pd.DataFrame({"model": ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"],
                     "n_embd": [768, 1024, 1280, 1600], "n_layer": [12, 24, 36, 48], "seq_len": 1024,
                     "n_params": [124_439_808, 354_823_168, 774_030_080, 1_557_611_200],
                     "n_tokens": 2e10, "loss": [3.3, 3.0, 2.9, 2.8]})
LLAMA = pd.DataFrame({"n_embd": [4096, 5120], "n_layer": [32, 40], "n_params": [6_738_415_616, 13_015_864_320],
                      "n_tokens": [1e12, 1e12], "loss": [1.8, 1.75]})




# ------------------------------------------------------------------ 1. --param-count


def test_count_formulas_match_published_models():
    assert count_params("gpt2-12N2", [64, 768], [2, 12]).tolist() == [n_params_nonembedding(64, 2),
                                                                       n_params_nonembedding(768, 12)]
    assert swiglu_hidden([4096, 5120, 64]).tolist() == [11008, 13824, 256]  # LLaMA 7B, 13B; tiny widths round up
    # LLaMA's totals less the untied embeddings (2·V·N) are exactly the swiglu count, norms included
    np.testing.assert_array_equal(count_params("swiglu", LLAMA.n_embd, LLAMA.n_layer),
                                  LLAMA.n_params - 2 * 32000 * LLAMA.n_embd)


def test_param_count_derives_missing_n_params(capsys, monkeypatch, dbpath, tmp_path):
    shapes = tmp_path / "shapes.csv"
    GPT2.drop(columns="n_params").to_csv(shapes, index=False)
    code, _, err = run_cli("runs", "import", shapes, "--db", dbpath)
    _one_line_error(code, err, "lacks required column(s) n_params", "--param-count gpt2-12N2 or swiglu")

    code, out, err = run_cli("runs", "import", shapes, "--db", dbpath, "--param-count", "gpt2-12N2")
    assert code == 0, err
    assert "n_params derived from n_embd and n_layer (gpt2-12N2) for 4 row(s)" in out and "warning" not in out
    got = RunDB(dbpath).runs()
    assert got["n_params"].tolist() == [n_params_nonembedding(n, l) for n, l in zip(GPT2.n_embd, GPT2.n_layer)]
    assert got["flops"].tolist() == (6 * got["n_params"] * 2e10).tolist()  # the 6ND FLOPs use the derived count

    llama = tmp_path / "llama.jsonl"
    LLAMA.drop(columns="n_params").to_json(llama, orient="records", lines=True)
    code, out, err = run_cli("runs", "import", llama, "--db", dbpath, "--param-count", "swiglu", "--json")
    assert code == 0, err
    assert json.loads(out)["derived_n_params"] == 2 and json.loads(out)["param_count"] == "swiglu"
    got = RunDB(dbpath).runs(where=[("source", "=", "llama")])
    assert got["n_params"].tolist() == [6_476_271_616, 12_688_184_320]

    # a row that can be derived from nothing is named, with the fix
    partial = tmp_path / "partial.csv"
    GPT2.drop(columns="n_params").assign(n_layer=[12, None, 36, 48]).to_csv(partial, index=False)
    code, _, err = run_cli("runs", "import", partial, "--db", dbpath, "--param-count", "swiglu")
    _one_line_error(code, err, "row 2, column 'n_params'", "give n_embd and n_layer to derive it")


def test_param_count_checks_given_counts(capsys, monkeypatch, dbpath, tmp_path):
    # GQA-style counts below the full multi-head SwiGLU count: imported as given, with a warning
    table = tmp_path / "gqa.csv"
    LLAMA.assign(n_params=count_params("swiglu", LLAMA.n_embd, LLAMA.n_layer) * [0.9, 1.0]).to_csv(table, index=False)
    code, out, err = run_cli("runs", "import", table, "--db", dbpath, "--param-count", "swiglu")
    assert code == 0, err
    assert "warning: 1 of 2 row(s) have n_params below 0.98x the swiglu count" in out and "row 1" in out
    assert RunDB(dbpath).runs()["n_params"].iloc[0] == pytest.approx(0.9 * 6_476_271_616)
    code, _, err = run_cli("runs", "import", table, "--db", dbpath, "--source", "b",
                       "--param-count", "mamba")
    assert code == 2 and "Traceback" not in err  # a closed choice


# ------------------------------------------------------------------ 2. embedding-inclusive counts


def test_embedding_inclusive_counts_warn_and_subtract_exactly(capsys, monkeypatch, dbpath, tmp_path):
    table = tmp_path / "gpt2.csv"
    GPT2.to_csv(table, index=False)
    code, out, err = run_cli("runs", "import", table, "--db", dbpath)
    assert code == 0, err  # imported as given: a warning, not a refusal
    warning = next(line for line in out.splitlines() if "warning:" in line)
    assert "1 of 4 row(s) have n_params above 1.3x the gpt2-12N2 count" in warning
    assert "embedding-inclusive" in warning and "--subtract-embeddings VOCAB" in warning
    assert "excess of 51281·n_embd" in warning  # V + T of GPT-2: the hint a user can check
    assert RunDB(dbpath).runs()["n_params"].tolist() == GPT2.n_params.tolist()

    # with the architecture named, every size is flagged (embeddings are 9-32% of GPT-2's counts)
    code, out, _ = run_cli("runs", "import", table, "--db", dbpath, "--source", "b",
                       "--param-count", "gpt2-12N2", "--json")
    assert code == 0 and json.loads(out)["warnings"][0].startswith("4 of 4 row(s) have n_params above 1.02x")
    assert "--learned-positions" in json.loads(out)["warnings"][0]

    code, out, err = run_cli("runs", "import", table, "--db", dbpath, "--source", "c",
                         "--param-count", "gpt2-12N2", "--subtract-embeddings", "50257", "--learned-positions")
    assert code == 0, err
    assert "warning" not in out and "VOCAB·n_embd + seq_len·n_embd (VOCAB 50257) embedding parameters taken off for 4 row(s)" in out
    got = RunDB(dbpath).runs(where=[("source", "=", "c")])
    assert got["n_params"].tolist() == [n_params_nonembedding(n, l) for n, l in zip(GPT2.n_embd, GPT2.n_layer)]

    llama = tmp_path / "llama.csv"
    LLAMA.to_csv(llama, index=False)
    code, out, err = run_cli("runs", "import", llama, "--db", dbpath, "--param-count", "swiglu")
    assert code == 0 and "--untied-embeddings" in out and "embedding-inclusive" in out, err
    code, out, err = run_cli("runs", "import", llama, "--db", dbpath, "--source", "llama2",
                         "--param-count", "swiglu", "--subtract-embeddings", "32000", "--untied-embeddings")
    assert code == 0 and "warning" not in out, err
    assert RunDB(dbpath).runs(where=[("source", "=", "llama2")])["n_params"].tolist() == [6_476_271_616, 12_688_184_320]


def test_subtract_embeddings_refusals(capsys, monkeypatch, dbpath, tmp_path):
    table = tmp_path / "gpt2.csv"
    GPT2.to_csv(table, index=False)
    code, _, err = run_cli("runs", "import", table, "--db", dbpath, "--subtract-embeddings", "500000")
    _one_line_error(code, err, "row 1, column 'n_params'", "is not positive", "already non-embedding")
    GPT2.drop(columns="seq_len").to_csv(table, index=False)
    code, _, err = run_cli("runs", "import", table, "--db", dbpath, "--subtract-embeddings",
                       "50257", "--learned-positions")
    _one_line_error(code, err, "no seq_len column", "--set seq_len=VALUE")
    code, _, err = run_cli("runs", "import", table, "--db", dbpath, "--untied-embeddings")
    _one_line_error(code, err, "give it too")
    assert not dbpath.exists() or RunDB(dbpath).count() == 0


# ------------------------------------------------------------------ 3. --source default, round trips


def _db_with_imported_and_trained(dbpath) -> tuple[RunDB, str]:
    rdb = RunDB(dbpath)
    rdb.import_frame(pd.read_csv(EPOCH_CSV).rename(columns={"Model Size": "n_params", "Training FLOP": "flops"}),
                     "epoch")
    config = {"n_embd": 64, "n_layer": 4, "parameterization": "completep", "seed": 3}
    rid = rdb.start_run(config, "cafe0123", n_params=201_088.0, sweep="shape", sweep_id="s1")
    rdb.finish_run(rid, "done", loss=3.25, n_tokens=2e5, flops=1.5e12, wall_s=12.5, flop_convention="6P+6NV+12LNT")
    return rdb, rid


def _assert_same_runs(a: pd.DataFrame, b: pd.DataFrame, columns) -> None:
    assert list(b["run_id"]) == list(a["run_id"])
    for col in columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            np.testing.assert_array_equal(y.astype(float), x.astype(float), err_msg=col)  # exact, NaN = NaN
        else:
            assert y.tolist() == x.tolist(), col


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_export_then_import_without_options_gives_the_same_runs(capsys, monkeypatch, dbpath, tmp_path, ext):
    _db_with_imported_and_trained(dbpath)
    out = tmp_path / f"exported.{ext}"
    assert run_cli("runs", "export", "--out", out, "--db", dbpath)[0] == 0
    other = tmp_path / "other.sqlite"
    code, stdout, err = run_cli("runs", "import", out, "--db", other)
    assert code == 0, err
    assert "as sources 'epoch' (245 runs), 'trained' (1 run)" in stdout
    a, b = RunDB(dbpath).runs(statuses=None), RunDB(other).runs(statuses=None)
    _assert_same_runs(a, b, CANONICAL_COLUMNS)


def test_export_all_columns_round_trips_and_never_skips_training(capsys, monkeypatch, dbpath, tmp_path):
    rdb, rid = _db_with_imported_and_trained(dbpath)
    out = tmp_path / "everything.csv"
    assert run_cli("runs", "export", "--out", out, "--all-columns", "--db", dbpath)[0] == 0
    assert is_cp_plan_export(pd.read_csv(out, nrows=0).columns)
    other = tmp_path / "other.sqlite"
    code, stdout, err = run_cli("runs", "import", out, "--db", other)
    assert code == 0, err
    assert "orig_config_hash" in stdout and "never resumed or skipped" in stdout
    a, b = RunDB(dbpath).runs(statuses=None), RunDB(other).runs(statuses=None)
    internal = {"config_hash", "config_json", "worker", "lease_expires_at", "attempts", "step", "sweep",
                "created_at", "updated_at"}
    _assert_same_runs(a, b, [c for c in RUN_COLUMNS if c not in internal])  # d_head, sweep_id, wall_s, ... too
    _assert_same_runs(a, b, ["x", "y", "color", "hex_color"])  # the first import's extras
    row = b.set_index("run_id").loc[rid]
    assert row["orig_config_hash"] == "cafe0123" and json.loads(row["orig_config_json"])["seed"] == 3
    assert row["config_hash"] is None or (isinstance(row["config_hash"], float) and math.isnan(row["config_hash"]))
    # issue 10's safety: the imported 'done' run is not the trained one
    copy = RunDB(other)
    assert copy.find_done("cafe0123") is None
    assert copy.enqueue({"n_embd": 64, "n_layer": 4}, "cafe0123")[1] == "queued"

    # an export of the copy imports again (the first origin's bookkeeping stays)
    again = tmp_path / "again.jsonl"
    assert run_cli("runs", "export", "--out", again, "--all-columns", "--status", "done",
               "--db", other)[0] == 0
    third = tmp_path / "third.sqlite"
    code, _, err = run_cli("runs", "import", again, "--db", third)
    assert code == 0, err
    c = RunDB(third).runs().set_index("run_id")
    assert c.loc[rid, "orig_config_hash"] == "cafe0123" and c.loc[rid, "source"] == "trained"


def test_export_with_unfinished_runs_says_how_to_export_finished_ones(capsys, monkeypatch, dbpath, tmp_path):
    rdb, _ = _db_with_imported_and_trained(dbpath)
    rdb.start_run({"n_embd": 64, "n_layer": 8}, "beef", n_params=4e5)  # still running
    out = tmp_path / "all.csv"
    assert run_cli("runs", "export", "--out", out, "--db", dbpath)[0] == 0
    code, _, err = run_cli("runs", "import", out, "--db", tmp_path / "copy.sqlite")
    _one_line_error(code, err, "value 'running' is not one of done", "--status done --status diverged")


def test_source_defaults_to_the_file_stem(capsys, monkeypatch, dbpath, tmp_path):
    table = tmp_path / "Epoch data (2024).csv"
    GPT2.to_csv(table, index=False)
    code, out, err = run_cli("runs", "import", table, "--db", dbpath)
    assert code == 0 and "as source 'Epoch-data-2024'" in out, err
    assert set(RunDB(dbpath).runs()["source"]) == {"Epoch-data-2024"}
    assert RunDB(dbpath).runs()["run_id"].iloc[0] == "Epoch-data-2024-0"
    with pytest.raises(Exception, match="--source"):
        source_from_path("trained.csv")
    # a table's own source 'trained' is kept only from a cp-plan export
    (tmp_path / "t.csv").write_text("n_params,n_tokens,loss,source\n1e6,2e7,3.0,trained\n")
    code, _, err = run_cli("runs", "import", tmp_path / "t.csv", "--db", dbpath)
    _one_line_error(code, err, "value 'trained' is reserved for runs cp-plan trains")


# ------------------------------------------------------------------ 4. --where comparisons


@pytest.fixture
def grid(dbpath, tmp_path):
    rows = [{"run_id": f"r{i}", "n_params": p, "n_tokens": 20 * p, "loss": loss, "n_layer": l, "team": team}
            for i, (p, loss, l, team) in enumerate([(5e5, 3.4, 2, "a"), (1e6, 3.1, 4, "b"), (2e6, 2.9, 2, "a"),
                                                    (4e6, 2.7, 8, "b"), (8e6, 2.5, 16, "c")])]
    pd.DataFrame(rows).to_json(tmp_path / "grid.jsonl", orient="records", lines=True)
    RunDB(dbpath).import_frame(pd.read_json(tmp_path / "grid.jsonl", lines=True), "grid")
    return dbpath


@pytest.mark.parametrize("where, ids", [
    (["n_params>=1e6"], ["r1", "r2", "r3", "r4"]),
    (["loss<3"], ["r2", "r3", "r4"]),
    (["n_layer!=2"], ["r1", "r3", "r4"]),
    (["n_params>=1e6", "n_params<4e6"], ["r1", "r2"]),            # a range: both hold
    (["n_layer=2", "n_layer=16"], ["r0", "r2", "r4"]),           # equalities on one column: either
    (["n_layer == 4"], ["r1"]),
    (["loss<=2.9", "n_layer>2"], ["r3", "r4"]),
    (["lr=null"], ["r0", "r1", "r2", "r3", "r4"]),
    (["lr!=null"], []),
    (["n_layer>1e9"], []),
    (["team>a"], ["r1", "r3", "r4"]),                             # an imported extra: as text
    (["team!=b", "n_params<8e6"], ["r0", "r2"]),
])
def test_where_takes_comparisons(capsys, monkeypatch, grid, where, ids):
    args = [a for w in where for a in ("--where", w)]
    code, out, err = run_cli("runs", "list", "--db", grid, "--json", *args)
    assert code == 0, err
    assert [r["run_id"] for r in json.loads(out)] == ids


def test_where_on_stored_columns_is_in_the_query(monkeypatch, grid):
    import planner.db.queries as dbmod  # where RunDB.runs reads its frames

    seen = []
    real = dbmod.read_runs_frame

    def spy(result, **kw):
        df = real(result, **kw)
        seen.append(len(df))
        return df

    monkeypatch.setattr(dbmod, "read_runs_frame", spy)
    df = RunDB(grid).runs(where=[("n_params", ">=", "2e6"), ("n_layer", "!=", "16")], limit=1)
    assert df["run_id"].tolist() == ["r3"] and seen == [1]  # SQL filtered and limited: one row read


@pytest.mark.parametrize("expr, fragment", [
    ("n_params=>1e6", "OP one of =, !=, <, <=, >, >="),
    ("n_params", "OP one of =, !=, <, <=, >, >="),
    ("<3", "OP one of"),
    ("loss<", "OP one of"),
    ("loss<null", "null (missing) goes with = or != only"),
    ("n_layer>four", "n_layer is numeric"),
    ("nope>1", "unknown column 'nope'"),
])
def test_bad_where_is_one_line(capsys, monkeypatch, grid, expr, fragment):
    code, _, err = run_cli("runs", "list", "--db", grid, "--where", expr)
    _one_line_error(code, err, fragment)


# ------------------------------------------------------------------ 5. imports without base shape or LR


def _synthetic_runs(with_base: bool) -> pd.DataFrame:
    """Two parameterizations x 3 sizes x 4 N:L, losses from a Chinchilla-like law with an N:L
    penalty and a μP gap growing with depth; no base shape or LR unless ``with_base``."""
    rng = np.random.default_rng(0)
    rows = []
    for name in ("completep", "mup"):
        for size in (1e5, 3e5, 1e6):
            for ratio in (4, 12, 36, 108):
                s = shape_for_params(size, ratio, d_head=16)
                d = 20.0 * s.n_params
                pen = 0.04 * math.log(s.ratio / 24) ** 2
                gap = 0.012 * math.log(s.n_layer) if name == "mup" else 0.0
                loss = (1.7 + (60 * s.n_params ** -0.34 + 300 * d ** -0.28) * (1 + pen)) * (1 + gap)
                rows.append({"parameterization": name, "n_embd": s.n_embd, "n_layer": s.n_layer,
                             "n_head": s.n_embd // 16, "d_head": 16, "n_params": float(s.n_params), "n_tokens": d,
                             "loss": loss + 0.002 * rng.standard_normal(), "vocab_size": 50257, "seq_len": 2048})
    df = pd.DataFrame(rows)
    return df.assign(base_n_embd=64, base_n_layer=2) if with_base else df


def test_imported_runs_without_base_or_lr_serve_every_law_and_the_plan(capsys, monkeypatch, dbpath, tmp_path):
    table = tmp_path / "nobase.csv"
    _synthetic_runs(with_base=False).to_csv(table, index=False)
    code, out, err = run_cli("runs", "import", table, "--db", dbpath)
    assert code == 0 and "24 run(s)" in out, err
    for law in (["shape"], ["chinchilla"], ["compute", "--pool-shapes"]):
        code, out, err = run_cli("fit", "--law", *law, "--db", dbpath, "--bootstrap", "0", "--json")
        assert code == 0, (law, err)
        fitted = json.loads(out)["laws"]
        assert fitted and all(math.isfinite(v) for f in fitted.values() for v in f["values"].values()), law

    code, out, err = run_cli("recommend", "--params", "1e7", "--db", dbpath, "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["n_embd"] > 0 and plan["hparams"] is None and "mup" in plan["savings"]
    assert "record no base_n_embd, base_n_layer or lr" in plan["assumptions"]["hparams"]
    assert "--set base_n_embd=... --set base_n_layer=... --set lr=..." in plan["assumptions"]["hparams"]
    warnings = " | ".join(plan["warnings"])
    assert "no per-group hyperparameters" in warnings and "base_n_embd, base_n_layer or lr" in warnings
    assert "the mup band and the savings vs mup rest on a proxy base for the mup gap law" in warnings

    # with the base shape but no LR, only the hyperparameters still need a field
    with_base = tmp_path / "base.csv"
    _synthetic_runs(with_base=True).to_csv(with_base, index=False)
    other = tmp_path / "base.sqlite"
    assert run_cli("runs", "import", with_base, "--db", other)[0] == 0
    code, out, err = run_cli("recommend", "--params", "1e7", "--db", other, "--json")
    assert code == 0, err
    plan = json.loads(out)
    warnings = " | ".join(plan["warnings"])
    assert "record no lr" in plan["assumptions"]["hparams"] and "proxy base" not in warnings
    assert "record no lr;" in warnings


# ------------------------------------------------------------------ 6. runs() in chunks


def test_runs_frame_is_the_same_in_any_chunking(monkeypatch, dbpath, tmp_path):
    import planner.db.frames as dbmod  # where the frames are read in chunks

    rdb, rid = _db_with_imported_and_trained(dbpath)  # extras on 245 rows, none on the trained one
    rdb.import_frame(pd.DataFrame({"n_params": [1e6, 2e6], "n_tokens": [2e7, 4e7], "loss": [3.0, 2.9],
                                   "n_layer": [None, 4], "note": ["late", None]}), "late")
    whole = rdb.runs(statuses=None)
    assert list(whole.columns[:len(RUN_COLUMNS)]) == list(RUN_COLUMNS)
    assert list(whole.columns[len(RUN_COLUMNS):]) == ["color", "hex_color", "x", "y", "note"]  # first seen (stored sorted)
    assert whole["n_params"].dtype == "float64" and whole["n_layer"].dtype == "float64"  # some lack n_layer
    assert whole["run_id"].iloc[-1] == "late-1" and whole["parameterization"].isna().sum() == 247
    for chunk in (1, 2, 7, 246):
        monkeypatch.setattr(dbmod, "READ_CHUNK_ROWS", chunk)
        pd.testing.assert_frame_equal(rdb.runs(statuses=None), whole)
        last = rdb.runs(statuses=None, limit=3)  # the descending LIMIT query, turned around
        pd.testing.assert_frame_equal(last, whole.tail(3).reset_index(drop=True)[list(last.columns)])
    trained = rdb.runs(where=[("source", "=", "trained")])
    assert trained["n_embd"].dtype == "int64" and list(trained.columns) == list(RUN_COLUMNS)  # no extras here
    empty = rdb.runs(where=[("loss", ">", "50")])
    assert len(empty) == 0 and list(empty.columns) == list(RUN_COLUMNS) and empty["n_params"].dtype == "float64"


def test_runs_frame_memory_is_a_few_times_the_frame(tmp_path):
    import tracemalloc

    rng = np.random.default_rng(0)
    n = 20_000
    rdb = RunDB(tmp_path / "big.sqlite")
    rdb.import_frame(pd.DataFrame({"n_params": rng.uniform(1e6, 1e9, n), "n_tokens": rng.uniform(1e8, 1e10, n),
                                   "loss": rng.uniform(2, 4, n)}), "big")
    tracemalloc.start()
    try:
        df = rdb.runs()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a dict per row (the old reader) peaked near 9x the frame; column arrays stay near 2x
    assert len(df) == n and peak < 4 * df.memory_usage(deep=True).sum()
