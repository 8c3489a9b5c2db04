"""The HTML report: pure analysis helpers, figure builders, the page, the CLI command."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from planner.shapes import n_params_nonembedding, shape_for_params
from reports import analysis as an

PARAMS = ("sp", "mup", "completep")
# Best N:L and curvature of the synthetic shape penalty: CompleteP's is widest (paper's claim).
SHAPE_TRUTH = {"sp": (48.0, 0.020), "mup": (64.0, 0.012), "completep": (24.0, 0.004)}


def shape_runs(scales=(2e5, 6e5), ratios=(4, 8, 16, 32, 64, 128), seed=0) -> pd.DataFrame:
    """Shape-sweep runs drawn from L = 1.8 + 40/P^0.3 + c·ln(ratio/r*)² (+ small noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in scales:
        for name in PARAMS:
            r_star, curv = SHAPE_TRUTH[name]
            for ratio in ratios:
                s = shape_for_params(p, ratio, d_head=16)
                loss = 1.8 + 40 / s.n_params**0.3 + curv * math.log(s.ratio / r_star) ** 2
                rows.append(dict(
                    run_id=f"s-{name}-{int(p)}-{ratio}", status="done", parameterization=name,
                    alpha=1.0 if name == "completep" else None, n_embd=s.n_embd, n_layer=s.n_layer,
                    n_head=s.n_head, d_head=16, base_n_embd=64, base_n_layer=2,
                    n_params=s.n_params, n_tokens=20 * s.n_params,
                    flops=6.0 * s.n_params * 20 * s.n_params, loss=loss + rng.normal(0, 1e-4), lr=3e-3,
                    source="trained", sweep="shape", device="cpu", dtype="float32", wall_s=10.0,
                    flop_convention="6P+6NV+12LNT", code_version="test", reason=None))
    # SP at the deepest shape diverges
    rows[0].update(status="diverged", loss=float("nan"), reason="loss is nan at step 12")
    return pd.DataFrame(rows)


LR_OPT = {"mup": lambda depth: 2e-3 * depth**-0.5, "completep": lambda depth: 2e-3}


def lr_runs(depths=(2, 4, 8, 16), n_embd=64) -> pd.DataFrame:
    """LR sweep: loss = 3 + 0.04·(log2 lr − log2 lr*(L))²; μP's optimum drifts as L^(−1/2)."""
    rows = []
    lrs = [2.0**k for k in range(-14, -5)]
    for name, opt in LR_OPT.items():
        for depth in depths:
            for lr in lrs:
                loss = 3.0 + 0.04 * (math.log2(lr) - math.log2(opt(depth))) ** 2
                rows.append(dict(run_id=f"lr-{name}-{depth}-{lr:g}", status="done", parameterization=name,
                                 n_embd=n_embd, n_layer=depth, n_head=n_embd // 16,
                                 n_params=n_params_nonembedding(n_embd, depth), n_tokens=1e5, flops=1e12,
                                 loss=loss, lr=lr, source="trained", sweep="lr", device="cpu",
                                 dtype="float32", reason=None))
    rows.append(dict(run_id="lr-mup-16-big", status="diverged", parameterization="mup", n_embd=n_embd,
                     n_layer=16, n_head=4, n_params=1, n_tokens=1e5, flops=1e12, loss=float("inf"),
                     lr=0.5, source="trained", sweep="lr", device="cpu", dtype="float32",
                     reason="loss blew up"))
    return pd.DataFrame(rows)


def coord_rows(depths=(2, 4, 8, 16, 32), steps=10) -> pd.DataFrame:
    """μP's |h| grows ∝ L; CompleteP's is flat (Fig. 7 of Dey et al. 2025)."""
    rows = []
    for name in ("mup", "completep"):
        for depth in depths:
            for step in range(1, steps + 1):
                h = (0.5 * depth if name == "mup" else 1.0) * (1 + 0.01 * step)
                rows.append(dict(check_id=f"c-{name}", parameterization=name, alpha=None, n_embd=64,
                                 n_layer=depth, step=step, resid_abs_mean=h, logits_abs_mean=1.0,
                                 axis="depth", created_at="2025-01-01T00:00:00"))
    return pd.DataFrame(rows)


def all_runs() -> pd.DataFrame:
    return pd.concat([shape_runs(), lr_runs()], ignore_index=True)


# ----------------------------------------------------------------------------- analysis


def test_scale_groups_cluster_realized_params():
    runs = shape_runs(scales=(2e5, 6e5))
    groups = an.scale_groups(runs["n_params"])
    assert groups.nunique() == 2
    for target in (2e5, 6e5):
        members = runs[groups == groups[(runs["n_params"] - target).abs().idxmin()]]
        assert np.all(np.abs(np.log(members["n_params"] / target)) < np.log(1.5))


def test_band_from_curve_matches_threshold():
    ratio = np.geomspace(2, 256, 200)
    loss = 3.0 + 0.01 * np.log(ratio / 32) ** 2
    band = an.band_from_curve(ratio, loss, tolerance=0.01)
    # within 1%: 0.01·ln(r/32)² ≤ 0.03 -> |ln(r/32)| ≤ √3
    assert band["best_ratio"] == pytest.approx(32, rel=0.03)
    assert band["ratio_lo"] == pytest.approx(32 * math.exp(-math.sqrt(3)), rel=0.03)
    assert band["ratio_hi"] == pytest.approx(32 * math.exp(math.sqrt(3)), rel=0.03)
    with pytest.raises(ValueError):
        an.band_from_curve(ratio, loss, tolerance=-1)


def test_optimal_lr_interpolates_between_grid_points():
    lrs = [2.0**k for k in range(-12, -5)]
    true = 2.0**-9.3
    res = an.optimal_lr(lrs, [(math.log2(lr) - math.log2(true)) ** 2 for lr in lrs])
    assert res["lr_opt"] == pytest.approx(true, rel=1e-6)
    assert not res["at_edge"] and res["lr_grid_best"] == 2.0**-9
    edge = an.optimal_lr(lrs, [-math.log2(lr) for lr in lrs])  # keeps improving up to the largest LR
    assert edge["at_edge"] and edge["lr_opt"] == lrs[-1]


def test_lr_drift_measures_mup_drift_and_completep_transfer():
    table = an.lr_transfer_table(lr_runs(), "n_layer")
    assert set(table["parameterization"]) == {"mup", "completep"}
    mup16 = table[(table["parameterization"] == "mup") & (table["n_layer"] == 16)].iloc[0]
    assert mup16["n_failed"] == 1 and mup16["lr_opt"] == pytest.approx(2e-3 / 4, rel=1e-6)
    drift = an.lr_drift(table).set_index("parameterization")
    assert drift.loc["mup", "log2_factor"] == pytest.approx(-1.5, abs=1e-6)  # (16/2)^(-1/2)
    assert drift.loc["completep", "log2_factor"] == pytest.approx(0.0, abs=1e-6)
    assert an.lr_transfer_table(lr_runs(), "n_embd").empty  # depth sweep only


def test_coord_verdicts_and_latest_check_wins():
    rows = coord_rows()
    stale = rows[rows["parameterization"] == "completep"].assign(
        check_id="old", created_at="2024-01-01T00:00:00", resid_abs_mean=99.0)
    v = an.coord_verdicts(pd.concat([stale, rows])).set_index("parameterization")
    assert v.loc["mup", "verdict"] == "growing" and v.loc["mup", "ratio"] == pytest.approx(16)
    assert v.loc["completep", "verdict"] == "stable" and v.loc["completep", "ratio"] == pytest.approx(1)


# ----------------------------------------------------------------------------- the page

SCRIPT_SRC = re.compile(r"<script\b[^>]*\bsrc\s*=", re.I)
LINK = re.compile(r"<link\b", re.I)
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def assert_self_contained(page: str) -> None:
    """No element loads anything from outside the file, and plotly.js is inlined exactly once.
    (The bundle itself holds URL strings for optional features such as map tiles; the page's own
    markup, everything except the bundle, must hold none.)"""
    from plotly.offline import get_plotlyjs

    bundle = get_plotlyjs()
    assert page.count(bundle[:400]) == 1 and bundle in page, "plotly.js must be inlined exactly once"
    assert not SCRIPT_SRC.search(page), "a <script src=...> reference"
    assert not LINK.search(page), "a <link> element (stylesheet or font)"
    markup = page.replace(bundle, "")
    assert not EXTERNAL.search(markup), "an external src/href"
    assert not re.search(r"@import|@font-face|url\(", markup)


@pytest.fixture(scope="module")
def full_page() -> str:
    from reports.page import render_report

    runs = all_runs()
    shape = an.with_ratio(an.of_sweep(runs, "shape"))
    shape["scale_params"] = an.scale_groups(shape["n_params"])
    curves = []
    for p in shape["scale_params"].unique():
        for name, (r_star, curv) in SHAPE_TRUTH.items():
            ratio = np.geomspace(3, 160, 60)
            loss = 1.8 + 40 / p**0.3 + curv * np.log(ratio / r_star) ** 2
            curves.append(pd.DataFrame(dict(scale_params=p, parameterization=name, ratio=ratio, loss=loss,
                                            low=loss - 0.01, high=loss + 0.01)))
    flops = np.geomspace(1e11, 1e14, 30)
    compute = pd.concat([pd.DataFrame(dict(parameterization=n, label=f"{n} frontier", flops=flops,
                                           loss=1.8 + 300 * flops**-0.15 * k, low=np.nan, high=np.nan))
                         for n, k in (("mup", 1.05), ("completep", 1.0))])
    savings = pd.DataFrame(dict(ratio=[4.6, 62, 4.6, 62], baseline=["mup", "mup", "sp", "sp"],
                                saved=[0.344, 0.118, 0.5, 0.2], low=[0.3, 0.05, 0.4, 0.1],
                                high=[0.4, 0.2, 0.6, 0.3]))
    plan = {"n_embd": 832, "n_layer": 179, "ratio": 4.65, "predicted_loss": 2.5,
            "band": {"completep": {"ratio_lo": 11.8, "ratio_hi": 200.0}},
            "assumptions": ["extrapolates 1500× beyond the largest run"]}
    return render_report(runs, coord_rows(), shape_curves=pd.concat(curves), compute_curves=compute,
                         savings=savings, plan=plan, meta={"db": "test.sqlite"})


def test_full_page_has_every_section_and_no_external_refs(full_page):
    from reports.page import SECTIONS

    assert_self_contained(full_page)
    for title in SECTIONS.values():
        assert f">{title}</h2>" in full_page or title == "Methods"
    assert "class=\"note empty\"" not in full_page  # every section had data
    # the synthetic μP optimum drifts by (16/2)^(-1/2): stated on the page
    assert "−1.50 factor-2 steps" in full_page or "-1.50 factor-2 steps" in full_page
    assert "loss blew up" in full_page and "loss is nan at step 12" in full_page
    assert "34.4%" in full_page  # a savings value, as a table cell
    assert "6·P + 6·N·V + 12·L·N·T" in full_page  # methods box: the FLOP convention spelled out
    assert "cpu / float32" in full_page


def test_empty_database_page_says_what_is_missing():
    from reports.page import render_report

    page = render_report(None, None)
    assert_self_contained(page)
    for what in ("No shape-sweep runs yet", "No LR-sweep runs yet", "No coordinate checks yet",
                 "No FLOP-savings estimates yet", "No plan yet", "No runs yet"):
        assert what in page


def test_sections_follow_their_data():
    from reports.page import render_report

    page = render_report(lr_runs(), None)
    assert "No shape-sweep runs yet" in page and "No LR-sweep runs yet" not in page
    assert "Across depth" in page and "No coordinate checks yet" in page


def test_single_shape_lr_scan_is_shown_but_not_counted_as_transfer():
    from reports.page import render_report, sections_present

    scan = lr_runs(depths=(2,))
    scan = scan[scan["n_layer"] == 2]  # drop the diverged L=16 run: one shape only
    page = render_report(scan, None)
    assert "LR scan at a single shape" in page and "No LR sweeps across depth or width yet" in page
    assert sections_present(page)["lr"] is False and sections_present(page)["runs"] is True


def test_figures_mark_bands_optima_and_failures():
    from reports.figures import fig_loss_vs_ratio, fig_lr_transfer

    runs = an.with_ratio(shape_runs(scales=(2e5,)))
    pts = runs[an.finite_loss(runs) & (runs["parameterization"] == "completep")]
    band = an.band_from_curve(pts["ratio"], pts["loss"], 0.01)
    fig = fig_loss_vs_ratio(runs, None, {"completep": band})
    seg = [t for t in fig.data if t.name.startswith("CompleteP (α = 1) band")]
    assert len(seg) == 1 and list(seg[0].y) == [band["threshold"]] * 2
    assert list(seg[0].x) == [band["ratio_lo"], band["ratio_hi"]]
    crosses = [t for t in fig.data if t.name.endswith("diverged/failed")]
    assert len(crosses) == 1 and len(crosses[0].x) == 1  # the one diverged SP run
    assert fig.layout.xaxis.type == "log"

    lr = lr_runs()
    table = an.lr_transfer_table(lr, "n_layer")
    fig = fig_lr_transfer(lr, table, "n_layer")
    stars = [t for t in fig.data if t.name.endswith("optimum")]
    assert len(stars) == len(table) == 8
    mup16 = [t for t in stars if t.name == "L=16 optimum" and t.xaxis == "x"][0]
    assert mup16.x[0] == pytest.approx(2e-3 / 4)


def test_write_report_is_atomic(tmp_path):
    from planner.errors import CpPlanError
    from reports.page import write_report

    target = tmp_path / "r.html"
    target.write_text("old")
    write_report(target, "<html>new</html>")
    assert target.read_text() == "<html>new</html>"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary left behind

    with pytest.raises(TypeError):
        write_report(target, 12345)  # fails mid-write: the old page stays, no temporary left
    assert target.read_text() == "<html>new</html>"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]
    with pytest.raises(CpPlanError, match="does not exist"):
        write_report(tmp_path / "missing" / "r.html", "x")


# ----------------------------------------------------------------------------- database and CLI


def fill_db(path, runs: pd.DataFrame, coord: pd.DataFrame | None = None):
    """A RunDB holding ``runs`` the way the trainer writes them (start_run, then finish_run)."""
    from planner.db import RunDB

    db = RunDB(str(path))
    finish_fields = ("loss", "reason", "wall_s", "flops")
    for row in runs.to_dict("records"):
        fields = {k: v for k, v in row.items() if k not in ("status", *finish_fields)
                  and v is not None and not (isinstance(v, float) and math.isnan(v))}
        run_id = db.start_run({}, f"hash-{row['run_id']}", **fields)
        done = {k: row[k] for k in finish_fields if row.get(k) is not None
                and not (isinstance(row[k], float) and not math.isfinite(row[k]))}
        db.finish_run(run_id, row["status"], **done)
    if coord is not None:
        db.add_coord_rows(coord.to_dict("records"))
    return db


def cli_run(capsys, monkeypatch, *args):
    import sys

    import cli

    monkeypatch.setattr(sys, "argv", ["cp-plan", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


@pytest.fixture(scope="module")
def shape_db(tmp_path_factory):
    """Three scales of shape sweeps (enough for shape and compute laws), an LR sweep, a coordinate check."""
    path = tmp_path_factory.mktemp("db") / "runs.sqlite"
    runs = pd.concat([shape_runs(scales=(1e5, 3e5, 1e6, 3e6)), lr_runs()], ignore_index=True)
    fill_db(path, runs, coord_rows())
    return path


def test_build_report_from_database(shape_db):
    from planner.db import RunDB
    from reports.build import build_report
    from reports.page import sections_present

    db = RunDB(str(shape_db), create=False)
    page = build_report(db, None, None)
    assert_self_contained(page)
    present = sections_present(page)
    # no laws: the shape, LR, coordinate and runs sections still show their data
    assert present["shape"] and present["lr"] and present["coord"] and present["runs"]
    assert not present["savings"] and not present["plan"]
    assert "loss is nan at step 12" in page
    assert db.fingerprint() in page  # the methods box names the database state it shows


@pytest.mark.slow
def test_report_command_with_laws_and_plan(shape_db, tmp_path, capsys, monkeypatch):
    import json

    out = tmp_path / "r.html"
    code, stdout, err = cli_run(capsys, monkeypatch, "report", "--out", out, "--db", shape_db,
                                "--params", "1e7", "--hardware", "weight-streaming", "--bootstrap", "20",
                                "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["sections"] == {k: True for k in summary["sections"]}, summary["notes"]
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "shape law" in page and "Per-group hyperparameters" in page
    assert "Fitted compute laws" in page and "Loss vs FLOPs per N:L family" in page
    # the plan's tables come from planner.planview, as in `recommend --details`: each saving with its
    # significance, each band edge with its interval
    assert "saves at N:L" in page and "significant?" in page and "deep edge N:L" in page
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_report_command_bad_input(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CP_PLAN_DB", raising=False)
    cases = [
        (("--params", "1e6"), "--hardware"),
        (("--params", "1e6", "--hardware", "quantum"), "quantum"),
        (("--tolerance", "-0.1"), "--tolerance"),
        (("--db", tmp_path / "none.sqlite"), "no run database"),
    ]
    for args, fragment in cases:
        code, _, err = cli_run(capsys, monkeypatch, "report", "--out", tmp_path / "r.html", *args)
        assert code == 1 and err.startswith("cp-plan: error: ") and err.count("\n") == 1, err
        assert fragment in err
    assert not (tmp_path / "r.html").exists()


def test_report_command_without_laws_still_writes(tmp_path, capsys, monkeypatch):
    db = tmp_path / "lr.sqlite"
    fill_db(db, lr_runs())
    out = tmp_path / "r.html"
    code, stdout, err = cli_run(capsys, monkeypatch, "report", "--out", out, "--db", db)
    assert code == 0, err
    assert "no shape laws" in err and "wrote" in stdout
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "No shape-sweep runs yet" in page and "Across depth" in page


def test_reproduction_summary_names_the_data_the_runs_trained_on():
    """The summary's scale line is read from the runs (it once said KJV, context 64 for every database)."""
    import json

    from reports.summary import data_description

    english = pd.DataFrame({"vocab_size": [256, 256], "seq_len": [128, 128], "d_head": [8, 8],
                             "config_json": [json.dumps({"corpus": "english"}), "not json"]})
    got = data_description(english)
    assert "English corpus" in got and "context 128" in got and "head size 8" in got and "byte-level" in got
    mixed = pd.DataFrame({"vocab_size": [50257, None], "seq_len": [2048, 1024], "config_json": [None, None]})
    got = data_description(mixed)
    assert "unknown data" in got and "context 1024, 2048" in got and "head size unknown" in got
    assert "byte-level" not in got
