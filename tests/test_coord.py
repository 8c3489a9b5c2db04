"""Coordinate check (Dey et al. 2025, Fig. 7): μP grows with depth, CompleteP and α = 0.5 stay flat."""

import json

import pytest

torch = pytest.importorskip("torch")

from trainer.config import TrainConfig  # noqa: E402
from trainer.coord import coord_check, verdicts  # noqa: E402


@pytest.fixture(scope="module")
def depth_rows():
    torch.set_num_threads(1)
    cfg = TrainConfig(n_embd=32, n_layer=2, d_head=16, base_n_embd=32, base_n_layer=2, lr=1e-3,
                      batch_size=4, seq_len=32)
    return coord_check(cfg, [("mup", None), ("alpha0.5", 0.5), ("completep", 1.0)], [32], [2, 16], 6, "depth")


def test_rows_cover_every_shape_and_step(depth_rows):
    keys = {(r["parameterization"], r["n_layer"], r["step"]) for r in depth_rows}
    assert len(keys) == len(depth_rows) == 3 * 2 * 7
    assert all(r["resid_abs_mean"] > 0 and r["axis"] == "depth" for r in depth_rows)


def test_mup_grows_with_depth_and_completep_stays_flat(depth_rows):
    v = {x["parameterization"]: x for x in verdicts(depth_rows, "depth")}
    assert v["mup"]["verdict"] == "growing" and v["mup"]["ratio"] > 2
    assert v["completep"]["verdict"] == "stable" and v["completep"]["ratio"] < 2
    assert v["alpha0.5"]["verdict"] == "stable"
    assert v["mup"]["ratio"] > 2 * v["completep"]["ratio"]


def test_step_zero_is_identical_at_the_base_shape(depth_rows):
    """At the base depth μP = CompleteP (m_L = 1): the same network, the same activations."""
    at_base = {r["parameterization"]: r["resid_abs_mean"] for r in depth_rows if r["n_layer"] == 2 and r["step"] == 3}
    assert at_base["mup"] == pytest.approx(at_base["completep"], rel=1e-6)


def test_verdict_labels():
    rows = [dict(parameterization="x", n_layer=n, step=1, resid_abs_mean=v) for n, v in ((2, 1.0), (8, 0.3))]
    assert verdicts(rows, "depth")[0]["verdict"] == "shrinking"


def test_cli_records_rows_and_prints_json(tmp_path):
    from typer.testing import CliRunner

    from cli import app
    from planner.db import RunDB

    db = tmp_path / "c.sqlite"
    res = CliRunner().invoke(app, ["coord-check", "--parameterizations", "mup,completep", "--n-embd", "32",
                                   "--depths", "2,4", "--steps", "2", "--seq-len", "32", "--batch-size", "2",
                                   "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["axis"] == "depth" and {v["parameterization"] for v in out["verdicts"]} == {"mup", "completep"}
    assert len(RunDB(str(db)).coord_rows()) == len(out["rows"]) == 2 * 2 * 3
