"""Bad input, generated (hypothesis): imported tables and command-line arguments.

Every example must end in one of two ways: success with the documented coercions (numeric
strings → numbers, integral floats → integers, a diverged run's non-finite loss → missing, FLOPs
or tokens derived by C = 6ND, FLOP conventions kept per row), or a clear error: a CpPlanError
with a one-line message (the CLI: one stderr line and exit 1, or click's usage error and exit 2)
and the database exactly as before. Never another exception, never a traceback, never a partial
write. Examples are bounded (max_examples) so the file runs in seconds.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli as _cli
from planner.db import RunDB
from planner.errors import CpPlanError
from planner.tableio import MAX_COUNT

SETTINGS = settings(max_examples=50, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_counter = itertools.count()
TRIED: dict[str, int] = {}  # examples per property, for the closing figures (printed with -s)


def _tried(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


# ------------------------------------------------------------------ cell values

BAD_NUMBERS = [float("nan"), float("inf"), float("-inf"), 0, 0.0, -1, -1e-300, -5e6, 1e308, 1e41, 10**400,
               2**63, -(2**63) - 1, "nan", "NaN", "inf", "-inf", "1e400", "-0", "", " ", "abc", "1,000", "0x10",
               True, False, [1], {"a": 1}, "1e6\x00", "\ud800"]
good_pos = st.floats(min_value=1e3, max_value=1e12)
cell = st.one_of(
    st.sampled_from(BAD_NUMBERS),
    st.none(),
    good_pos,
    good_pos.map(repr),  # CSV-style numeric strings
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(max_size=6),
)
loss_cell = st.one_of(st.floats(min_value=0.5, max_value=10).map(str), cell)
text_cell = st.one_of(st.sampled_from(["done", "diverged", "failed", "running", "pending", "", None, 3, 2.5,
                                       "6ND", "6P+6NV+12LNT", "kaplan", "x" * 300, "a\x00b", "\ud800"]),
                      st.text(max_size=5))


@st.composite
def tables(draw) -> pd.DataFrame:
    n = draw(st.integers(min_value=1, max_value=5))
    col = lambda strat: draw(st.lists(strat, min_size=n, max_size=n))  # noqa: E731
    data = {"n_params": col(st.one_of(good_pos, cell)), "loss": col(loss_cell)}
    which = draw(st.sampled_from(["n_tokens", "flops", "both"]))
    if which in ("n_tokens", "both"):
        data["n_tokens"] = col(st.one_of(good_pos, cell))
    if which in ("flops", "both"):
        data["flops"] = col(st.one_of(good_pos.map(lambda x: x * 1e6), cell))
    if draw(st.booleans()):  # duplicate run ids are likely with three names
        data["run_id"] = col(st.one_of(st.sampled_from(["a", "b", "c"]), text_cell))
    if draw(st.booleans()):
        data["status"] = col(text_cell)
    if draw(st.booleans()):  # mixed FLOP conventions
        data["flop_convention"] = col(st.sampled_from(["6ND", "6P+6NV+12LNT", "kaplan", None, ""]))
    if draw(st.booleans()):
        data["n_layer"] = col(cell)
    if draw(st.booleans()):
        data["notes"] = col(st.one_of(cell, text_cell))  # an extra column
    return pd.DataFrame(data, dtype=object)  # cells as drawn (pandas would coerce strings to arrow)


def _state(rdb: RunDB):
    return rdb.count(), rdb.fingerprint()


def _check_imported(rdb: RunDB, source: str, n: int) -> None:
    df = rdb.runs(where={"source": source}, statuses=None)
    assert len(df) == n and df["run_id"].is_unique
    for col in ("n_params", "n_tokens", "flops"):
        assert ((df[col] > 0) & (df[col] <= MAX_COUNT)).all(), col
    done = df[df["status"] == "done"]
    assert done["loss"].map(lambda x: math.isfinite(x) and x >= 0).all()
    assert df["flop_convention"].map(lambda c: isinstance(c, str) and c != "").all()


@pytest.fixture(params=["sqlite", "postgresql"])
def rdb(request, tmp_path):
    url = str(tmp_path / "bad.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    db = RunDB(url)
    db.import_frame(pd.DataFrame({"run_id": ["keep"], "n_params": [1e6], "n_tokens": [2e7], "loss": [3.0]}), "before")
    yield db
    db.close()


@SETTINGS
@given(df=tables())
def test_import_frame_all_or_nothing(rdb, df):
    _tried("import_frame")
    source = f"s{next(_counter)}"
    before = _state(rdb)
    try:
        n = rdb.import_frame(df, source)
    except CpPlanError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and len(msg) < 2000
        assert _state(rdb) == before
        return
    assert n == len(df) and rdb.count() == before[0] + n
    _check_imported(rdb, source, n)


# ------------------------------------------------------------------ the CLI


def _clean_failure(code: int, err: str) -> None:
    assert "Traceback" not in err
    if code == 1:
        assert err.startswith("cp-plan: error: ") and err.count("\n") == 1, err
    else:
        assert code == 2 and ("Usage" in err or "Error" in err), (code, err)


def _write(df: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        df.to_csv(path, index=False, errors="surrogatepass")  # a lone surrogate becomes invalid UTF-8 bytes
    else:
        with open(path, "w", encoding="utf-8") as f:
            for rec in df.to_dict(orient="records"):
                f.write(json.dumps(rec, default=str) + "\n")


@SETTINGS
@given(df=tables(), ext=st.sampled_from([".csv", ".jsonl"]), mangle=st.sampled_from([None, "truncate", "garbage"]))
def test_cli_import_of_generated_files(tmp_path, df, ext, mangle):
    _tried("cli runs import")
    dbpath = tmp_path / "cli.sqlite"
    if not dbpath.exists():
        RunDB(dbpath).import_frame(pd.DataFrame({"n_params": [1e6], "n_tokens": [2e7], "loss": [3.0]}), "before")
    before = _state(RunDB(dbpath))
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / f"t{ext}"
    _write(df, path)
    if mangle == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[: max(1, len(raw) * 2 // 3)])
    elif mangle == "garbage":
        path.write_bytes(path.read_bytes() + b"\xff\xfe{not json,,\n")
    source = f"cli{next(_counter)}"
    code, out, err = _cli("runs", "import", path, "--source", source, "--db", dbpath, "--json")
    if code == 0:
        summary = json.loads(out)
        assert summary["imported"] >= 1 and RunDB(dbpath).count() == before[0] + summary["imported"]
        _check_imported(RunDB(dbpath), source, summary["imported"])
    else:
        _clean_failure(code, err)
        assert _state(RunDB(dbpath)) == before


number_arg = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e400", "-0", "abc", "", "1e-320", "3e-3", "64", "2",
                     "1.5", "100", "12", "0.5", "1", "1e20"]),
    st.floats(allow_nan=False).map(repr),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
)


@SETTINGS
@given(opts=st.fixed_dictionaries({}, optional={
    "--n-embd": number_arg, "--n-layer": number_arg, "--base-n-embd": number_arg, "--lr": number_arg,
    "--init-std": number_arg, "--weight-decay": number_arg, "--eps": number_arg, "--alpha": number_arg,
    "--parameterization": st.sampled_from(["sp", "mup", "completep", "depth-alpha", "alpha0.5", "ntk", "", "MUP"]),
}))
def test_cli_hparams_arguments(opts):
    _tried("cli hparams")
    args = ["hparams", "--json"] + [x for kv in opts.items() for x in kv]
    if "--parameterization" not in opts:
        args += ["--parameterization", "completep"]
    code, out, err = _cli(*args)
    if code == 0:
        table = json.loads(out)
        assert table and "Traceback" not in err
    else:
        _clean_failure(code, err)


BAD_TRAIN = {
    "--n-embd": ["0", "-64", "100", "abc", "1e400"],
    "--n-layer": ["0", "-1", "2.5", "nan"],
    "--n-tokens": ["nan", "inf", "-inf", "-1", "0", "0.5", "abc", "1e400"],
    "--lr": ["nan", "inf", "-1", "0", "x"],
    "--batch-size": ["0", "-8", "1.5"],
    "--seq-len": ["0", "-1"],
    "--parameterization": ["ntk", "", "sp,mup"],
    "--alpha": ["0.2", "2", "nan", "inf"],
    "--device": ["tpu", "cuda:x", ""],
    "--dtype": ["float16", ""],
    "--warmup-frac": ["1", "-0.1", "nan"],
}


@SETTINGS
@given(bad=st.sampled_from(sorted(BAD_TRAIN)).flatmap(lambda k: st.tuples(st.just(k), st.sampled_from(BAD_TRAIN[k]))))
def test_cli_train_bad_arguments_fail_before_anything_is_written(tmp_path, bad):
    """Only invalid values: each must stop before training starts and before the database exists."""
    _tried("cli train")
    pytest.importorskip("torch")
    dbpath = tmp_path / f"train{next(_counter)}.sqlite"
    extra = ["--parameterization", "depth-alpha"] if bad[0] == "--alpha" else []
    code, out, err = _cli("train", *extra, *bad, "--n-embd" if bad[0] != "--n-embd" else "--n-layer",
                          "32" if bad[0] != "--n-embd" else "2", "--d-head", "16", "--db", dbpath,
                          "--no-progress", "--device", "cpu" if bad[0] != "--device" else bad[1])
    _clean_failure(code, err)
    assert not dbpath.exists()


BAD_SWEEP = {
    "--params": ["nan", "inf", "-1", "0", "abc"],
    "--ratios": ["", "8,abc", "0", "-4", "nan", ",,"],
    "--tpp": ["0", "-1", "nan"],
    "--workers": ["0", "-2", "x"],
    "--parameterizations": ["", "ntk", "sp,,ntk"],
    "--launcher": ["pbs", "", "SLURM"],
    "--lease-s": ["0", "-5", "nan", "inf"],
}


@SETTINGS
@given(bad=st.sampled_from(sorted(BAD_SWEEP)).flatmap(lambda k: st.tuples(st.just(k), st.sampled_from(BAD_SWEEP[k]))))
def test_cli_sweep_bad_arguments_queue_nothing(tmp_path, bad):
    _tried("cli sweep shape")
    pytest.importorskip("torch")
    dbpath = tmp_path / "sweep.sqlite"
    RunDB(dbpath).close()
    before = _state(RunDB(dbpath))
    opts = {"--params": "2e4", "--ratios": "8,16", "--parameterizations": "mup,completep", "--tpp": "1",
            "--workers": "1", "--launcher": "local", "--lease-s": "60"}
    opts[bad[0]] = bad[1]
    code, out, err = _cli("sweep", "shape", *[x for kv in opts.items() for x in kv], "--d-head", "16",
                          "--base-n-embd", "32", "--device", "cpu", "--db", dbpath,
                          "--checkpoint-dir", tmp_path / "ckpt")
    _clean_failure(code, err)
    assert _state(RunDB(dbpath)) == before and RunDB(dbpath).count() == 0


@SETTINGS
@given(where=st.lists(st.tuples(st.sampled_from(["n_embd", "loss", "status", "source", "nope", "", "run_id", "alpha"]),
                                st.one_of(st.sampled_from(["nan", "inf", "abc", "", "null", "-1", "1e400"]),
                                          st.text(max_size=4))), max_size=3),
       status=st.one_of(st.none(), st.sampled_from(["done", "all", "running", "bogus", ""])))
def test_cli_runs_list_filters(tmp_path, where, status):
    _tried("cli runs list")
    dbpath = tmp_path / "list.sqlite"
    if not dbpath.exists():
        RunDB(dbpath).import_frame(pd.DataFrame({"n_params": [1e6, 2e6], "n_tokens": [2e7, 4e7], "loss": [3.0, 2.9]}), "x")
    args = ["runs", "list", "--db", dbpath, "--json"]
    for k, v in where:
        args += ["--where", f"{k}={v}"]
    if status is not None:
        args += ["--status", status]
    code, out, err = _cli(*args)
    if code == 0:
        assert isinstance(json.loads(out), list)
    else:
        _clean_failure(code, err)


def test_every_property_above_tried_many_inputs(capsys):
    """The properties above are only as strong as the inputs hypothesis drew: each must have tried
    at least 20 (a strategy that filters everything out, or a health check that stops early,
    fails here). Prints the counts (run with -s)."""
    if not TRIED:
        pytest.skip("run with the property tests of this module (they fill TRIED)")
    with capsys.disabled():
        print("\nbad-input examples tried:", json.dumps(TRIED, sort_keys=True), "total", sum(TRIED.values()))
    few = {k: v for k, v in TRIED.items() if v < 20}
    assert not few, few
