"""Planner, FLOP savings and the `cp-plan recommend` command.

The planner tests use shape laws with known closed forms (``KnownShapeLaw``) so they check the
planner's logic exactly and do not depend on trained runs; the CLI tests fit real laws from a
synthetic run database built in a temporary directory.
"""

import json
import re
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from planner.candidates import candidate_shapes
from planner.errors import CpPlanError
from planner.hardware import PROFILES, load_profile
from planner.recommend import Target, make_plan
from planner.rules import BaseHParams, resolve_shape
from planner.savings import continuous_shape, family_flops, flop_savings
from planner.shapes import FLOP_CONVENTION, flops_per_token, n_params_nonembedding
from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


class KnownShapeLaw:
    """L(P, D, N:L) = E + A/(kP)^a + B/(kD)^b + c·(ln r − ln r*(P))², with c = c_deep below the
    optimum r*(P) = r0·(P/1e8)^g and c_wide above it. ``k`` < 1 makes a parameterization behave
    like a k-times-smaller model. Bootstrap samples perturb every coefficient by ``noise``."""

    names = ("E", "A", "a", "B", "b", "r0", "g", "c_deep", "c_wide", "k")

    def __init__(self, E=1.8, A=400.0, a=0.34, B=2000.0, b=0.37, r0=64.0, g=0.1, c_deep=0.002,
                 c_wide=0.02, k=1.0, n_boot=64, noise=0.01, seed=0):
        self.theta = np.array([E, A, a, B, b, r0, g, c_deep, c_wide, k], dtype=float)
        rng = np.random.default_rng(seed)
        self.samples = self.theta * (1 + noise * rng.standard_normal((n_boot, len(self.theta))))

    def r_opt(self, n_params):
        return self.theta[5] * (n_params / 1e8) ** self.theta[6]

    @staticmethod
    def _eval(t, p, d, r):
        E, A, a, B, b, r0, g, cd, cw, k = (t[..., i, None] if t.ndim == 2 else t[i] for i in range(10))
        x = np.log(r) - np.log(r0 * (p / 1e8) ** g)
        return E + A * (k * p) ** -a + B * (k * d) ** -b + np.where(x < 0, cd, cw) * x * x

    def predict(self, n_params, n_tokens, ratio):
        p, d, r = (np.asarray(v, dtype=float) for v in (n_params, n_tokens, ratio))
        s = self._eval(self.samples, p, d, r)
        return self._eval(self.theta, p, d, r), np.percentile(s, 2.5, axis=0), np.percentile(s, 97.5, axis=0)

    def predict_samples(self, n_params, n_tokens, ratio):
        p, d, r = (np.asarray(v, dtype=float) for v in (n_params, n_tokens, ratio))
        return self._eval(self.samples, p, d, r)


# CompleteP: a wide, flat band reaching deep-narrow shapes; μP and SP penalized at depth.
LAWS = {
    "completep": KnownShapeLaw(c_deep=0.003),
    "mup": KnownShapeLaw(c_deep=0.03, k=0.85),
    "sp": KnownShapeLaw(c_deep=0.04, c_wide=0.03, k=0.7),
}
BASE = {"base_n_embd": 64, "base_n_layer": 2, "lr": 3e-3, "init_std": 0.02, "weight_decay": 0.1,
        "eps": 1e-8}
CONTEXT = {k: {"ratio_min": 2.0, "ratio_max": 512.0, "max_n_params": 2e6, "n_runs": 30,
               "tokens_per_param": [20.0, 20.0], "base": dict(BASE)} for k in LAWS}


def plan(hardware="flat", laws=LAWS, context=CONTEXT, **target):
    target.setdefault("n_params", 1.5e9)
    return make_plan(Target(**target), hardware, laws, context)


# ---------------------------------------------------------------------- FLOP savings


def test_continuous_shape_solves_the_exact_count():
    n, l = continuous_shape(np.array([1e6, 1.5e9]), np.array([8.0, 62.0]))
    assert np.allclose(n / l, [8.0, 62.0])
    assert np.allclose(l * (12 * n**2 + 13 * n) + 2 * n, [1e6, 1.5e9], rtol=1e-12)


def test_savings_recover_a_known_efficiency_gap():
    # other(P) = ref(k·P): other needs P/k params (and tokens) to match ref at P.
    k, p, r = 0.8, 1.5e9, 62.0
    ref, other = KnownShapeLaw(g=0.0, noise=0.0), KnownShapeLaw(g=0.0, k=k, noise=0.0)
    s = flop_savings(ref, other, p, r, tokens_per_param=20, vocab_size=50257, seq_len=2048)
    assert s.reachable and s.n_params_other == pytest.approx(p / k, rel=1e-4)
    assert s.fraction_6nd == pytest.approx(1 - k**2, rel=1e-3)
    def c(pp):
        n, l = continuous_shape(pp, r)
        return flops_per_token(n, l, 50257, 2048) * 20 * pp
    assert s.fraction == pytest.approx(1 - c(p) / c(p / k), rel=1e-3)
    assert s.convention == FLOP_CONVENTION
    # No bootstrap spread: the interval collapses onto the estimate.
    assert s.low == pytest.approx(s.fraction, abs=1e-3) and s.high == pytest.approx(s.fraction, abs=1e-3)


def test_savings_interval_brackets_the_estimate_and_is_antisymmetric_in_direction():
    s = flop_savings(LAWS["completep"], LAWS["mup"], 1.5e9, 8.0)
    assert s.low < s.fraction < s.high and 0 < s.fraction < 1 and s.n_samples == 64
    back = flop_savings(LAWS["mup"], LAWS["completep"], 1.5e9, 8.0, reference="mup", other="completep")
    assert back.fraction < 0  # μP costs more than CompleteP at the same loss


def test_savings_grow_toward_deep_narrow_shapes_when_mup_is_penalized_there():
    at = {r: flop_savings(LAWS["completep"], LAWS["mup"], 1.5e9, r).fraction for r in (64, 16, 5)}
    assert at[5] > at[16] > at[64] > 0


def test_family_flops_match_planner_shapes_convention():
    n, l = continuous_shape(1e8, 32.0)
    assert float(family_flops(1e8, 32.0, 20, 256, 64)) == pytest.approx(
        (6 * 1e8 + 6 * n * 256 + 12 * l * n * 64) * 20 * 1e8, rel=1e-9)
    assert float(family_flops(1e8, 32.0, 20, 256, 64, "6ND")) == 6 * 1e8 * 2e9


# ---------------------------------------------------------------------- the planner


def test_flat_profile_picks_the_laws_loss_optimal_shape():
    p = plan("flat")
    law = LAWS["completep"]
    shapes = candidate_shapes(1.5e9, PROFILES["flat"], 64)
    loss = law.predict(np.full(len(shapes), 1.5e9), np.full(len(shapes), 3e10), [s.ratio for s in shapes])[0]
    best = shapes[int(np.argmin(loss))]
    assert (p.n_embd, p.n_layer) == (best.n_embd, best.n_layer)
    # ... and that shape sits next to the law's continuous optimum.
    assert abs(math.log(p.ratio / law.r_opt(1.5e9))) < 0.1


@pytest.mark.parametrize("n_params", [3e8, 1.5e9, 1e10])
def test_flat_pick_tracks_an_optimum_that_drifts_with_scale(n_params):
    law = KnownShapeLaw(c_deep=0.01, c_wide=0.01, g=0.3, noise=0.0)
    p = plan("flat", laws={"completep": law}, context={}, n_params=n_params)
    assert abs(math.log(p.ratio / law.r_opt(n_params))) < 0.12


def test_band_matches_the_closed_form_and_completep_band_is_wider():
    p = plan("flat", band_criterion="loss")
    law = LAWS["completep"]
    best = p.band["completep"]["best_loss"]
    # Quadratic penalty: loss ≤ best·(1+tol) ⇔ |ln r − ln r*| ≤ sqrt(tol·best/c).
    half_deep = math.sqrt(0.01 * best / 0.003)
    half_wide = math.sqrt(0.01 * best / 0.02)
    r_star = law.r_opt(1.5e9)
    band = p.band["completep"]
    grid_step = math.log(512 / 2) / 120 + 0.02
    assert abs(math.log(band["ratio_min"]) - (math.log(r_star) - half_deep)) < grid_step
    assert abs(math.log(band["ratio_max"]) - (math.log(r_star) + half_wide)) < grid_step
    assert band["ratio_min"] < p.band["mup"]["ratio_min"] < p.band["sp"]["ratio_min"]


def test_weight_streaming_picks_the_deepest_shape_in_the_band():
    p = plan("weight-streaming")
    flat = plan("flat")
    assert p.n_layer > 3 * flat.n_layer
    assert p.ratio >= p.band["completep"]["ratio_min"] * 0.95
    deeper = [a for a in p.alternatives if a["n_layer"] > p.n_layer]
    assert deeper and all(not a["in_band"] or not a["feasible"] for a in deeper)
    assert any("outside the band" in a["reason"] for a in deeper)


@pytest.mark.parametrize("n_params", [2e8, 1.5e9, 1e10])
@pytest.mark.parametrize("tolerance", [0.003, 0.01, 0.03])
def test_latency_never_deeper_than_weight_streaming(n_params, tolerance):
    ws = plan("weight-streaming", n_params=n_params, tolerance=tolerance)
    lat = plan("latency", n_params=n_params, tolerance=tolerance)
    assert lat.n_layer <= ws.n_layer
    assert lat.n_layer < ws.n_layer or tolerance < 0.005


@pytest.mark.parametrize("n_params", [2e8, 1.5e9, 1e10])
def test_gpu_widths_are_multiples_of_128_and_the_pick_is_fastest_in_band(n_params):
    gpu = PROFILES["gpu"]
    p = plan("gpu", n_params=n_params)
    assert p.n_embd % 128 == 0 and p.d_head == 128 and p.n_head == p.n_embd // 128
    assert p.n_layer % gpu.pipeline_stages == 0 and p.n_head % gpu.tensor_parallel == 0
    assert all(a["n_embd"] % 128 == 0 for a in p.alternatives)
    for a in p.alternatives:
        if a["feasible"] and a["in_band"]:
            assert a["step_time_s"] >= p.hardware["step_time_s"]
    assert p.n_layer < plan("weight-streaming", n_params=n_params).n_layer


def test_memory_profile_keeps_under_the_cap_and_changes_the_answer():
    mem = plan("memory")
    flat = plan("flat")
    cap = PROFILES["memory"].max_layer_bytes
    assert mem.hardware["layer_bytes"] <= cap < flat.hardware["layer_bytes"]
    assert mem.n_embd < flat.n_embd
    assert any("exceed" in a["reason"] for a in mem.alternatives)


def test_user_profile_changes_the_answer(tmp_path):
    f = tmp_path / "deep.toml"
    f.write_text('base = "weight-streaming"\nmax_layer = 48\n')
    p = plan(str(f))
    assert p.n_layer <= 48 and p.hardware["name"] == "deep"
    assert p.n_layer < plan("weight-streaming").n_layer


def test_plan_reports_exact_counts_tokens_flops_and_interval():
    p = plan("weight-streaming", tokens_per_param=10, vocab_size=32000, seq_len=4096)
    assert p.n_params == n_params_nonembedding(p.n_embd, p.n_layer)
    assert p.n_tokens == round(10 * p.n_params)
    assert p.flops == pytest.approx(flops_per_token(p.n_embd, p.n_layer, 32000, 4096) * p.n_tokens)
    lo, hi = p.predicted_loss_interval
    assert lo < p.predicted_loss < hi
    assert p.assumptions["extrapolation"] == pytest.approx(p.n_params / 2e6)
    assert set(p.savings) == {"mup", "sp"} and p.savings["sp"]["fraction"] > p.savings["mup"]["fraction"] > 0


def test_plan_dict_has_the_documented_keys_and_is_plain_json():
    d = plan("gpu").to_dict()
    for key in ("n_embd", "n_layer", "n_head", "ratio", "n_params", "n_tokens", "flops", "predicted_loss",
                "predicted_loss_interval", "band", "savings", "hparams", "alternatives", "assumptions"):
        assert key in d
    for s in d["savings"].values():
        assert {"fraction", "low", "high"} <= set(s)
    assert {"extrapolation", "tokens_per_param", "flop_convention", "data", "device"} <= set(d["assumptions"])
    json.dumps(d, allow_nan=False)
    assert 2 <= len(d["alternatives"]) <= 6 and all(a["reason"] for a in d["alternatives"])


def test_hparams_are_transferred_from_the_runs_base_shape():
    p = plan("weight-streaming")
    want = resolve_shape("completep", p.n_embd, p.n_layer, 64, 2, BaseHParams(lr=3e-3, init_std=0.02))
    assert p.hparams["groups"] == want.to_dict()["groups"]
    assert p.hparams["depth_mult"] == p.n_layer / 2 and p.hparams["residual_mult"] == pytest.approx(2 / p.n_layer)
    no_base = plan("weight-streaming", context={k: {**v, "base": None} for k, v in CONTEXT.items()})
    assert no_base.hparams is None and "no transferred hyperparameters" in no_base.assumptions["hparams"]


def test_flops_target_derives_params_at_the_tokens_per_param_line():
    budget = 3e20
    p = make_plan(Target(flops=budget), "flat", LAWS, CONTEXT)
    used = p.target["n_params_used"]
    assert float(family_flops(used, p.band["completep"]["best_ratio"], 20, 50257, 2048)) == pytest.approx(budget, rel=0.02)
    assert p.flops == pytest.approx(budget, rel=0.1)


@pytest.mark.parametrize("criterion", [{"band_criterion": "loss", "tolerance": 0.0},
                                       {"band_criterion": "compute", "max_overhead": 0.0}])
def test_zero_tolerance_leaves_only_the_loss_optimal_shape(criterion):
    flat = plan("flat")
    for hw in ("weight-streaming", "latency"):
        p = plan(hw, **criterion)
        assert abs(math.log(p.ratio / flat.ratio)) < 0.08


def test_trained_range_limits_the_search():
    ctx = {k: {**v, "ratio_min": 16.0} for k, v in CONTEXT.items()}
    p = plan("weight-streaming", context=ctx)
    assert p.ratio >= 16.0 and p.band["completep"]["reaches_low_edge"]
    assert any("outside the trained" in a["reason"] for a in p.alternatives)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_params": -1}, r"--params -1 must be a positive number"),
    ({"n_params": 1e9, "flops": 1e20}, r"exactly one of --params"),
    ({"n_params": 1e9, "tolerance": 1.5}, r"--tolerance 1.5"),
    ({"n_params": 1e9, "parameterization": "ntk"}, r"unknown parameterization 'ntk'"),
])
def test_bad_targets(kwargs, match):
    with pytest.raises(CpPlanError, match=match):
        Target(**kwargs)


def test_missing_law_and_impossible_hardware_are_explained(tmp_path):
    with pytest.raises(CpPlanError, match=r"no shape law for parameterization 'alpha0.5'.*completep, mup, sp"):
        plan(parameterization="alpha0.5")
    f = tmp_path / "tiny.toml"
    f.write_text('base = "memory"\nmax_layer_bytes = 1000\n')
    with pytest.raises(CpPlanError, match=r"no shape of 1.5e\+09 .* fits hardware profile 'tiny'"):
        plan(str(f))


# ---------------------------------------------------------------------- the CLI, on synthetic run databases

SIZES = (2e5, 8e5, 3.2e6)
RATIOS = (2, 4, 8, 16, 32, 64)
TRUE = {"completep": KnownShapeLaw(r0=16.0, g=0.05, c_deep=0.004, c_wide=0.02, noise=0.0),
        "mup": KnownShapeLaw(r0=16.0, g=0.05, c_deep=0.03, k=0.85, noise=0.0),
        "sp": KnownShapeLaw(r0=16.0, g=0.05, c_deep=0.04, c_wide=0.03, k=0.7, noise=0.0)}


def synthetic_runs(parameterizations=("completep", "mup", "sp"), sizes=SIZES, ratios=RATIOS, seed=0,
                   true=TRUE, noise=0.003):
    """Shape-sweep runs (20 tokens/param) whose losses follow ``true`` with relative ``noise``."""
    import pandas as pd

    from planner.shapes import shape_for_params

    rng = np.random.default_rng(seed)
    rows = []
    for p_name in parameterizations:
        for size in sizes:
            for ratio in ratios:
                s = shape_for_params(size, ratio, d_head=16)
                loss = float(true[p_name].predict([s.n_params], [20 * s.n_params], [s.ratio])[0][0])
                rows.append({
                    "run_id": f"{p_name}-{size:g}-{ratio}", "status": "done", "parameterization": p_name,
                    "n_embd": s.n_embd, "n_layer": s.n_layer, "n_head": s.n_head, "d_head": 16,
                    "n_params": float(s.n_params), "n_tokens": 20.0 * s.n_params,
                    "loss": loss * (1 + noise * rng.standard_normal()), "lr": 3e-3, "init_std": 0.02,
                    "base_n_embd": 64, "base_n_layer": 2, "vocab_size": 256, "seq_len": 64,
                    "device": "cpu", "epochs": 1.0,
                })
    return pd.DataFrame(rows)


def make_db(path, frame):
    from planner.db import RunDB

    db = RunDB(str(path))
    if frame is not None and len(frame):
        db.import_frame(frame, "synthetic")
    db.close()
    return path


@pytest.fixture(scope="module")
def synthetic_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("db") / "runs.sqlite"
    return make_db(path, synthetic_runs())


def test_cli_recommend_fits_caches_and_plans(synthetic_db, capsys):
    from planner.lawcache import cache_path_for

    cache = cache_path_for(str(synthetic_db), 30, 0)
    code, out, err = run_cli("recommend", "--db", str(synthetic_db), "--params", "1e8", "--hardware",
                             "weight-streaming", "--bootstrap", "30", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert cache.is_file() and first["assumptions"]["laws"]["origin"] == "fitted"
    assert set(first["band"]) == {"completep", "mup", "sp"}
    assert first["band"]["completep"]["ratio_min"] < first["band"]["mup"]["ratio_min"]
    assert first["savings"]["mup"]["fraction"] > 0 and first["savings"]["sp"]["fraction"] > 0
    assert first["hparams"]["base_n_embd"] == 64 and first["hparams"]["base"]["weight_decay"] == 0.1
    assert first["assumptions"]["extrapolation"] == pytest.approx(first["n_params"] / 3.2e6, rel=0.1)
    code, out, _ = run_cli("recommend", "--db", str(synthetic_db), "--params", "1e8", "--hardware",
                           "weight-streaming", "--bootstrap", "30", "--json")
    second = json.loads(out)
    assert second["assumptions"]["laws"]["origin"] == "cache"
    assert {k: v for k, v in second.items() if k != "assumptions"} == \
        {k: v for k, v in first.items() if k != "assumptions"}
    code, out, err = run_cli("recommend", "--db", str(synthetic_db), "--bootstrap", "30", "--json")
    assert code == 0, err  # no flags: the paper's headline scale on the shape-neutral profile
    d = json.loads(out)
    assert abs(d["n_params"] / 1.5e9 - 1) < 0.1 and d["hardware"]["name"] == "flat" and "target_default" in d["assumptions"]
    code, out, _ = run_cli("recommend", "--db", str(synthetic_db), "--params", "1e8", "--hardware", "latency",
                           "--bootstrap", "30", "--details")
    assert code == 0 and "Alternatives and why each lost" in out and "completep saves at N:L" in out
    code, brief, _ = run_cli("recommend", "--db", str(synthetic_db), "--params", "1e8", "--hardware", "latency",
                             "--bootstrap", "30")
    assert code == 0 and "Alternatives" not in brief and "saves at this N:L" in brief and brief.count("\n") <= 32


def test_cli_planner_picks_the_true_optimum_of_a_synthetic_shape_law(tmp_path, capsys):
    # Inside the shape law's family (one power law in P at fixed tokens/param, symmetric drifting bowl).
    law = KnownShapeLaw(B=0.0, r0=24.0, g=0.25, c_deep=0.03, c_wide=0.03, noise=0.0)
    runs = synthetic_runs(("completep",), true={"completep": law}, noise=0.0005, sizes=(1e5, 3e5, 1e6, 3e6))
    path = make_db(tmp_path / "runs.sqlite", runs)
    for n_params in (1e6, 1e7):
        code, out, err = run_cli("recommend", "--db", str(path), "--params", str(n_params), "--hardware", "flat",
                                 "--d-head", "16", "--bootstrap", "10", "--json")
        assert code == 0, err
        d = json.loads(out)
        # The fitted law finds the true optimum N:L (which drifts with P) ...
        assert abs(math.log(d["band"]["completep"]["best_ratio"] / law.r_opt(n_params))) < 0.05
        # ... and the pick is the candidate shape that is best under the true law.
        shapes = candidate_shapes(n_params, load_profile("flat"), 16)
        true_loss = law.predict([n_params] * len(shapes), [20 * n_params] * len(shapes), [s.ratio for s in shapes])[0]
        best = shapes[int(np.argmin(true_loss))]
        assert (d["n_embd"], d["n_layer"]) == (best.n_embd, best.n_layer)


def test_cli_refits_when_the_database_changes(tmp_path, capsys):
    path = make_db(tmp_path / "runs.sqlite", synthetic_runs(parameterizations=("completep", "mup")))
    args = ("recommend", "--db", str(path), "--params", "1e7", "--bootstrap", "10", "--json")
    code, out, err = run_cli(*args)
    assert code == 0, err
    fp1 = json.loads(out)["assumptions"]["laws"]["fingerprint"]
    make_db(path, synthetic_runs(parameterizations=("sp",)))
    code, out, err = run_cli(*args)
    d = json.loads(out)
    assert d["assumptions"]["laws"]["origin"] == "fitted" and d["assumptions"]["laws"]["fingerprint"] != fp1
    assert "sp" in d["savings"]
    from planner.lawcache import cache_path_for

    code, out, err = run_cli(*args, "--laws", str(cache_path_for(str(path), 10, 0)))
    assert code == 0 and json.loads(out)["assumptions"]["laws"]["origin"] == "file"


def test_cached_recommend_never_imports_torch_plotly_or_the_database_stack(synthetic_db, capsys):
    args = ["recommend", "--db", str(synthetic_db), "--params", "1.5e9", "--hardware", "weight-streaming",
            "--bootstrap", "30"]
    assert run_cli(*args)[0] == 0  # warm the cache
    probe = (
        "import sys, cli\n"
        f"sys.argv = ['cp-plan', *{args!r}]\n"
        "try:\n    cli.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = [m for m in ('torch', 'plotly', 'pandas', 'sqlalchemy', 'scipy', 'statsmodels') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stderr
    assert "n_embd" in proc.stdout and "weight-streaming" in proc.stdout


@pytest.mark.parametrize("case, args, match", [
    ("params", ["--params", "-1"], r"--params -1 must be a positive number, e.g. --params 1.5e9"),
    ("hardware", ["--hardware", "tpu"], r"unknown hardware profile 'tpu'; use one of flat, weight-streaming"),
    ("missing", ["--db", "{tmp}/nope.sqlite"], r"no run database at .*nope.sqlite"),
    ("empty", ["--db", "{empty}"], r"has no finished runs; train a shape sweep"),
    ("one", ["--db", "{one}"], r"has only 1 finished run"),
    ("unfittable", ["--db", "{flat}"], r"could not fit a shape law .*cp-plan sweep shape"),
])
def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, capsys, case, args, match):
    runs = synthetic_runs(parameterizations=("completep",))
    dbs = {"empty": make_db(tmp_path / "empty.sqlite", None) if case == "empty" else None,
           "one": make_db(tmp_path / "one.sqlite", runs.iloc[:1]) if case == "one" else None,
           # three runs of one shape: nothing to fit N:L or scale from
           "flat": make_db(tmp_path / "flat.sqlite", runs.iloc[[0, 0, 0]].assign(run_id=["a", "b", "c"]))
           if case == "unfittable" else None}
    args = [a.format(tmp=tmp_path, **{k: v for k, v in dbs.items()}) for a in args]
    if "--db" not in args:
        args += ["--db", str(tmp_path / "never-opened.sqlite")]
    code, out, err = run_cli("recommend", *args)
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cp-plan: error: "), err
    assert re.search(match, lines[0]), lines[0]
    assert not (tmp_path / "never-opened.sqlite").exists()


def test_cache_records_the_database_hash_for_the_fast_path(synthetic_db, capsys):
    """A cache whose database hash is missing (fitted while a WAL was pending, say) gets it on
    the next load, so later loads skip opening the database (no pandas, no SQLAlchemy)."""
    from planner import lawcache

    from planner.lawcache import cache_path_for

    cache = cache_path_for(str(synthetic_db), 30, 0)
    run_cli("recommend", "--db", str(synthetic_db), "--params", "1e8", "--bootstrap", "30", "--json")
    data = json.loads(cache.read_text())
    data["db_sha256"] = None
    cache.write_text(json.dumps(data))
    lawcache.load_laws(db=str(synthetic_db), bootstrap=30)
    assert json.loads(cache.read_text())["db_sha256"] == lawcache._file_sha256(synthetic_db)
