"""The Python API, called as a user would: the README's example runs as written, and
the CLI's JSON is the API's to_dict()."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from planner import api
from planner.errors import CpPlanError

ROOT = Path(__file__).resolve().parent.parent


def test_readme_python_example_runs_as_written():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    printed = out.getvalue()
    assert printed.startswith("Plan: completep") and "vs mup" in printed and "significant" in printed


def test_api_results_are_the_clis_json():
    laws = api.fit_laws()
    plan = api.recommend(1.5e9, hardware="weight-streaming", laws=laws)
    cli = subprocess.run([sys.executable, "-m", "cli", "recommend", "--params", "1.5e9", "--hardware",
                          "weight-streaming", "--json", "--curves"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["n_layer"] == plan.n_layer == plan.to_dict()["n_layer"]
    frame = plan.savings_frame()
    assert isinstance(frame, pd.DataFrame) and set(frame["versus"]) >= {"mup", "sp"}
    assert (frame["low"] <= frame["fraction"]).all() and (frame["fraction"] <= frame["high"]).all()
    assert "<pre>" in plan._repr_html_() and "hidden_weight" in plan._repr_html_()
    assert set(plan.hparams_frame()["group"]) >= {"embedding", "hidden_weight", "unembedding"}
    pred = api.predict(plan.n_embd, plan.n_layer, laws=laws)
    lo, hi = pred.interval
    assert lo <= pred.loss <= hi and pred.to_dict()["parameterization"] == "completep"
    assert len(api.open_runs()) > 0 and {"completep", "mup", "sp"} <= set(laws.to_frame()["parameterization"])


def test_api_refuses_bad_input_with_the_clis_messages():
    laws = api.fit_laws()
    with pytest.raises(CpPlanError, match="beyond the 1e\\+16"):
        api.predict(10**11, 94, laws=laws)
    with pytest.raises(CpPlanError, match="positive integer"):
        api.predict(0, 4, laws=laws)
    with pytest.raises(CpPlanError, match="bootstrap"):
        api.fit_laws(bootstrap=-1)
