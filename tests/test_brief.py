"""The plan in one screen: `cp-plan recommend` prints at most ~30 lines at 80 columns by
default, `--details` everything, and `--json` keeps the band curves behind `--curves`."""

from __future__ import annotations

import json

from conftest import run_cli_process
from planner.brief import plan_brief, rank_warnings

ARGS = ["recommend", "--params", "1.5e9", "--hardware", "weight-streaming"]


def _run(*extra):
    """The command at 80 columns, as a user's terminal runs it: its stdout."""
    proc = run_cli_process(*ARGS, *extra, env={"COLUMNS": "80"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_default_plan_fits_one_screen_and_details_keep_everything():
    brief = _run()
    lines = brief.splitlines()
    assert len(lines) <= 32
    assert all(len(line) <= 80 for line in lines[:-1])  # the last line is the command for the rest
    plan = json.loads(_run("--json"))
    for must in (f"n_embd {plan['n_embd']}", f"n_layer {plan['n_layer']}", "nats/byte", "vs mup", "vs sp",
                 "peak LR", "hidden_weight", "Warnings", "--details"):
        assert must in brief, must
    details = _run("--details")
    for must in ("Compute-efficient band", "Alternatives and why each lost", "Assumptions", "Per-group hyperparameters"):
        assert must in details
    assert details.count("warning:") == len(plan["warnings"])
    assert all("curve" not in b for b in plan["band"].values())
    with_curves = json.loads(_run("--json", "--curves"))
    assert all(len(b["curve"]["ratio"]) > 10 for b in with_curves["band"].values())
    assert {k: v for k, v in with_curves.items() if k != "band"} == {k: v for k, v in plan.items() if k != "band"}


def test_warnings_are_ranked_by_what_matters_most():
    ws = ["head size 64 differs", "the runs used a vocabulary of 256", "the plan is 6.4e+03x the parameters of the largest run",
          "something new", "the pick lies outside the (m_L, m_N) hull of the runs of sp (3x)"]
    ranked = rank_warnings(ws)
    assert ranked[0].startswith("the pick lies outside") and ranked[1].startswith("the plan is")
    assert ranked[-1] == "something new"


def test_brief_without_hparams_or_savings_still_reads():
    plan = {"parameterization": "completep", "n_params": 1e9, "hardware": {"name": "flat"}, "n_embd": 2048,
            "n_layer": 20, "n_head": 32, "d_head": 64, "ratio": 102.4, "pick_interval": [float("nan")] * 2,
            "n_tokens": 2e10, "target": {"tokens_per_param": 20}, "flops": 1.2e20, "flop_convention": "6ND",
            "predicted_loss_interval": [2.0, 2.2], "predicted_loss": 2.1, "loss_unit": "nats/token",
            "savings": {}, "hparams": None, "warnings": []}
    lines = plan_brief(plan)
    assert lines[0].startswith("Plan: completep") and "95%" not in lines[1] and len(lines) == 6
