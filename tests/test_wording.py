"""Tables a person reads without the README: columns in words, units named, plurals right."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli import app
from commands.common import fmt_cell


def _out(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def test_runs_list_names_its_columns_in_words():
    text = _out("runs", "list", "--limit", "1")
    assert "1 run in" in text and "run(s)" not in text
    for header in ("width N", "depth L", "non-embedding params", "training FLOPs", "validation loss", "base LR"):
        assert header in text, header
    assert "nats per token" in text  # the loss says its unit
    assert "n_params" not in text and "flops" not in text.replace("training FLOPs", "")


def test_runs_show_says_one_thread():
    run_id = json.loads(_out("runs", "list", "--json", "--where", "source=trained", "--limit", "1"))[0]["run_id"]
    text = _out("runs", "show", run_id)
    assert "1 threads" not in text
    assert fmt_cell("cpu (1 threads)") == "cpu (1 thread)" and fmt_cell("cpu (11 threads)") == "cpu (11 threads)"


def test_fit_table_counts_points_and_names_the_residual_scale():
    text = _out("fit", "--law", "compute", "--bootstrap", "0")
    assert "point(s)" not in text and " points" in text
    assert "in log loss" in text and "(log-loss)" not in text
