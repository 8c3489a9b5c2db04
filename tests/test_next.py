"""`cp-plan next` (planner.nextruns): the runs it proposes narrow the plan's intervals more than the same
FLOPs on a uniform grid, measured by simulating both designs from a known truth and refitting; the
sweep file it writes is one `cp-plan sweep file --dry-run` accepts."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner.lawcache import run_context
from planner.nextruns import greedy_design, propose
from planner.planlaws import build_laws, fit_plan_laws
from planner.recommend import Target, make_plan
from planner.shapes import make_shape, shape_for_params, training_flops
from conftest import run_cli
from test_recommend import make_db, synthetic_runs

ROOT = Path(__file__).resolve().parent.parent
NOISE = 0.003  # seed noise of the simulated runs (nats)
TARGET = 1e8  # 100x beyond the largest simulated run


def true_loss(name: str, n_embd: int, n_layer: int, n_params: float) -> float:
    """CompleteP: a multiplicative bowl in ln N:L whose optimum drifts with P; μP: the same times
    exp(0.05·ln m_L) on the reducible loss (its gap grows with depth)."""
    mu = math.log(20) + 0.08 * math.log(n_params / 1e5)
    red = 30.0 * n_params ** -0.3 * (1 + 0.02 * (math.log(n_embd / n_layer) - mu) ** 2)
    gap = {"completep": 0.0, "mup": 0.05 * math.log(n_layer / 2)}[name]
    return 1.2 + red * math.exp(gap)


def _row(name, s, rng):
    return {"parameterization": name, "n_embd": s.n_embd, "n_layer": s.n_layer, "n_params": float(s.n_params),
            "n_tokens": 20.0 * s.n_params, "loss": true_loss(name, s.n_embd, s.n_layer, s.n_params)
            + NOISE * rng.standard_normal(), "ratio": s.n_embd / s.n_layer, "base_n_embd": 64, "base_n_layer": 2,
            "lr": 0.01, "d_head": 16, "vocab_size": 256, "seq_len": 64}


def _world(seed):
    """Shape sweeps (N:L 2..64) at 1e5, 3e5 and 1e6 for CompleteP and μP."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame([_row(name, shape_for_params(size, r, 16), rng) for size in (1e5, 3e5, 1e6)
                         for r in (2, 4, 8, 16, 32, 64) for name in ("completep", "mup")])


def _fit(df, bootstrap):
    keys = df["parameterization"].to_numpy(dtype=object)
    ctx = {k: run_context(df[keys == k].reset_index(drop=True)) for k in sorted(set(keys))}
    out = fit_plan_laws(df, keys, bootstrap=bootstrap, seed=0, contexts=ctx)
    return build_laws(out), ctx, {"noise": out["noise"], "reference": out["reference"]}


def _widths(df, bootstrap=200):
    """The plan's interval widths after refitting: ln of the deep edge's interval, savings' width."""
    plan = make_plan(Target(n_params=TARGET), "weight-streaming", *_fit(df, bootstrap))
    lo, hi = plan.band["completep"]["edges"]["low"]["interval"]
    s = plan.savings["mup"]
    return np.array([math.log(hi / lo), s["high"] - s["low"]])


def _grid(flops, rng):
    """A shape sweep as a user would run it (N:L 2..64, both parameterizations) at the one P whose
    sweep costs ``flops``."""
    ratios = (2, 4, 8, 16, 32, 64)

    def shapes(p):
        return sorted({shape_for_params(p, r, 16) for r in ratios}, key=lambda s: s.n_embd)

    def cost(p):
        return 2 * sum(training_flops(s.n_embd, s.n_layer, 256, 64, 20 * s.n_params) for s in shapes(p))

    lo, hi = 1e4, 1e9
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if cost(mid) < flops else (lo, mid)
    return [_row(name, s, rng) for name in ("completep", "mup") for s in shapes(lo)]


def test_proposed_runs_narrow_the_plan_more_than_the_same_flops_on_a_uniform_grid():
    # Two worlds, three noise draws of the new runs each: the refit intervals are noisy (bootstrap
    # percentiles, form weights), so the designs are compared on the mean over the six refits.
    # Score: sum over the plan's quantities of ln(width after / width before) (negative = narrower).
    proposed, grid = [], []
    for world in (0, 1):
        df = _world(world)
        before = _widths(df)
        laws, ctx, meta = _fit(df, 100)
        p = propose(laws, ctx, meta, Target(n_params=TARGET), "weight-streaming", 2e15, d_head=16, vocab_size=256,
                    seq_len=64)
        assert 0 < p.flops_used <= 2e15 and len(p.runs) >= 4
        # the preview expects the deep edge's interval to narrow
        q = p.quantities[0]
        assert q["name"] == "pick_ratio" and q["variance_kept"] < 1
        assert q["interval"][0] <= q["expected_interval_after"][0] <= q["expected_interval_after"][1] <= q["interval"][1]
        for draw in range(3):
            rng = np.random.default_rng(1000 * world + draw)
            new = pd.DataFrame([_row(r["parameterization"], make_shape(r["n_embd"], r["n_layer"], 16), rng)
                                for r in p.runs])
            proposed.append(np.log(_widths(pd.concat([df, new], ignore_index=True)) / before))
            rng = np.random.default_rng(1000 * world + draw)
            uniform = pd.DataFrame(_grid(p.flops_used, rng))
            grid.append(np.log(_widths(pd.concat([df, uniform], ignore_index=True)) / before))
    prop, unif = np.mean(proposed, axis=0), np.mean(grid, axis=0)
    print(f"mean ln(width after/before): proposed edge {prop[0]:.2f} savings {prop[1]:.2f}; "
          f"uniform grid edge {unif[0]:.2f} savings {unif[1]:.2f}")
    assert prop.sum() < 0  # the proposed runs narrow the plan ...
    # ... by more than a uniform grid of the same FLOPs. The savings' width is mostly the
    # extrapolation term (planner.fit.extrapolation) at 100x beyond the runs, which runs within
    # 16x of the largest narrow little for either design, so the margin rests on the edge.
    assert prop.sum() < unif.sum() - 0.08
    assert prop[0] < unif[0]  # the deep edge (the pick on weight-streaming) most of all


def test_greedy_design_values_runs_by_what_they_tell_about_the_quantity_per_flop():
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(400)
    q = theta[:, None]  # the plan quantity
    y = np.stack([theta + 0.01 * rng.standard_normal(400),  # measures it, expensive
                  theta + 0.01 * rng.standard_normal(400),  # measures it, cheap
                  rng.standard_normal(400)], axis=1)  # unrelated, cheapest
    picks, var0, var1, why = greedy_design(q, y, np.array([10.0, 1.0, 0.1]), sigma=0.1, budget_flops=1.5, max_runs=3)
    assert picks[0][0] == (1,) and all(g != (2,) for g, _ in picks)  # the unrelated run is never worth it
    assert var1[0] < 0.05 * var0[0]
    # a pair observed together can be worth more than each of its runs alone (a gap needs both)
    base = 3 * rng.standard_normal(400)  # the shared part dominates each run's loss
    gap = rng.standard_normal(400)
    y2 = np.stack([base, base + gap], axis=1)
    alone = greedy_design(gap[:, None], y2, np.ones(2), 0.01, 1.0, 1)[0]
    pair = greedy_design(gap[:, None], y2, np.ones(2), 0.01, 2.0, 2, groups=[(0,), (1,), (0, 1)])[0]
    assert pair[0][0] == (0, 1) and pair[0][1] > 0.9 > 4 * alone[0][1]


@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("next") / "runs.sqlite"
    return make_db(path, synthetic_runs(parameterizations=("completep", "mup"), sizes=(1e5, 3e5, 1e6)))


def test_cli_next_json_writes_a_sweep_file_the_sweep_dry_run_accepts(small_db, tmp_path, capsys):
    out = tmp_path / "next.json"
    code, stdout, err = run_cli("next", "--db", str(small_db), "--params", "1e8", "--hardware", "weight-streaming",
                                "--budget-flops", "1e15", "--bootstrap", "20", "--json", "--out", str(out))
    assert code == 0, err
    d = json.loads(stdout)
    assert d["runs"] and d["flops_used"] <= 1e15 and d["sweep_file"] == str(out)
    names = {q["name"] for q in d["quantities"]}
    assert {"pick_ratio", "savings:mup"} <= names
    for q in d["quantities"]:
        assert len(q["interval"]) == 2 and len(q["expected_interval_after"]) == 2
    for r in d["runs"]:
        assert r["parameterization"] in ("completep", "mup") and r["n_embd"] % 16 == 0
        assert r["n_tokens"] == pytest.approx(20 * r["n_params"], rel=0.01) and r["seed"] >= 0
        assert 0.8 <= r["p_over_largest"] <= 20
    assert d["training_settings"]["d_head"] == 16 and d["training_settings"]["seq_len"] == 64
    assert d["training_settings"]["lr"] == 3e-3  # the base LR of the runs behind the laws
    # the file is the sweep machinery's: the dry run validates every config and trains nothing
    code, stdout, err = run_cli("sweep", "file", str(out), "--dry-run", "--json", "--db", str(small_db))
    assert code == 0, err
    dry = json.loads(stdout)
    assert dry["dry_run"] and dry["planned"] == len(d["runs"]) == dry["to_train"]
    assert [r["config_hash"] for r in dry["runs"]] == [r["config_hash"] for r in d["runs"]]
    assert dry["sweep"] == "shape" and dry["sweep_id"] == d["sweep_id"]
    # ... without torch: planning and checking a sweep need only `pip install -e .`
    probe = ("import sys; sys.argv = ['cp-plan', 'sweep', 'file', sys.argv[1], '--dry-run', '--db', sys.argv[2]]\n"
             "import cli\ntry:\n    cli.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
             "assert 'torch' not in sys.modules, 'torch imported'\n")
    r = subprocess.run([sys.executable, "-c", probe, str(out), str(small_db)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "to train" in r.stdout


def test_shipped_database_next_uses_its_own_training_settings(tmp_path, capsys):
    db = tmp_path / "runs.sqlite"
    shutil.copy(ROOT / "data" / "runs" / "runs.sqlite", db)
    shutil.copy(ROOT / "data" / "runs" / "laws.json", tmp_path / "laws.json")
    out = tmp_path / "next.json"
    code, stdout, err = run_cli("next", "--db", str(db), "--params", "1.5e9", "--hardware", "weight-streaming",
                                "--budget-flops", "1e15", "--json", "--out", str(out))
    assert code == 0, err
    d = json.loads(stdout)
    assert d["runs"] and d["flops_used"] <= 1e15
    data = json.loads(out.read_text())
    for entry in data["runs"]:
        c = entry["config"]
        assert (c["tokenizer"], c["seq_len"], c["d_head"], c["base_n_embd"], c["base_n_layer"], c["lr"]) == \
            ("byte", 64, 16, 64, 2, 0.01)
    code, stdout, err = run_cli("sweep", "file", str(out), "--dry-run", "--db", str(db))
    assert code == 0, err and f"{len(d['runs'])} to train" in stdout


@pytest.mark.parametrize("args, match", [
    (("--budget-flops", "0"), "--budget-flops 0 must be a positive number"),
    (("--budget-flops", "-1e15"), "--budget-flops -1e\\+15 must be a positive number"),
    (("--budget-flops", "1e15", "--hardware", "tpu-pod"), "tpu-pod"),
    (("--budget-flops", "1e3"), "buys no run"),
])
def test_cli_next_bad_input_is_one_line(small_db, tmp_path, capsys, args, match):
    import re

    code, out, err = run_cli("next", "--db", str(small_db), "--params", "1e8", "--bootstrap", "20",
                             "--out", str(tmp_path / "x.json"), *args)
    assert code != 0 and re.search(match, err) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.json").exists()


def test_sweep_file_refuses_a_bad_config_naming_the_run(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"n_embd": 64, "n_layer": 2, "d_head": 16, "base_n_embd": 64},
                               {"n_embd": 100, "n_layer": 2, "d_head": 16, "base_n_embd": 64}]))
    code, out, err = run_cli("sweep", "file", str(bad), "--dry-run")
    assert code == 1 and "run 2" in err and "n_embd=100 is not a multiple of d_head=16" in err
    bad.write_text(json.dumps([{"n_embd": 64, "learning_rate": 1e-3}]))
    code, out, err = run_cli("sweep", "file", str(bad), "--dry-run")
    assert code == 1 and "run 1" in err and "learning_rate" in err
    code, out, err = run_cli("sweep", "file", str(tmp_path / "missing.json"), "--dry-run")
    assert code == 1 and "does not exist" in err
