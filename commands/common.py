"""Options, output helpers and errors shared by every command group."""

# (no `from __future__ import annotations`: typer would eval every string annotation of every command at each start)

import json
import sys
from typing import Annotated, Optional

import typer

from planner.errors import CpPlanError

DbOpt = Annotated[
    Optional[str],
    typer.Option("--db", metavar="PATH|URL", help="Run database: a SQLite path or SQLAlchemy URL "
                 "(default: $CP_PLAN_DB, else data/runs/runs.sqlite in the project)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def bootstrap_checked(n: int) -> int:
    """--bootstrap, checked before anything runs (one line: planner.laws.check_bootstrap)."""
    from planner.laws import check_bootstrap

    return check_bootstrap(n)


def emit_json(obj) -> None:
    """Print plain JSON (NaN/inf become null so any JSON parser reads it)."""

    from planner.plainjson import plain

    typer.echo(json.dumps(plain(obj), indent=2, default=str))


def print_error(message: str) -> None:
    from planner.errors import mask_secrets

    # one line, whatever the message quotes (a file name with a newline, say)
    line = mask_secrets(message).replace("\r", "\\r").replace("\n", "\\n")
    typer.echo(f"cp-plan: error: {line}", err=True)


WhereOpt = Annotated[Optional[list[str]], typer.Option("--where", metavar="COLUMN OP VALUE", help="Only runs where COLUMN OP VALUE holds, OP one of = != < <= > >= (e.g. 'n_params>=1e6', 'loss<3', n_layer!=2; quote < and > from the shell). Repeatable: = twice on one column means either, every other condition must hold (a range: 'n_params>=1e6' 'n_params<1e7'); VALUE null means missing, and a missing value matches no comparison.")]


def where_terms(items: Optional[list[str]]) -> list:
    """--where expressions as (column, op, value) terms for RunDB.runs (planner.tableio.parse_where)."""
    from planner.tableio import parse_where

    return parse_where(items)


def fmt_cell(v) -> str:
    """A table cell ('—' for missing; one formatter: planner.planview.cell)."""
    from planner.planview import cell

    return cell(v)


def plural(n: int, word: str) -> str:
    """``1 run``, ``3 runs``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# `runs list` headers in words (the JSON and --all-columns keep the stored column names).


WorkersOpt = Annotated[int, typer.Option("--workers", help="Runs trained at once (processes).")]


def need_torch() -> None:
    """Trainer commands need torch; say how to install it instead of a traceback."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise CpPlanError("this command trains models and needs PyTorch: "
                          "pip install 'cp-plan[train]' torch==2.13.0 (CPU), or install your CUDA torch first")


def fit_progress(message: str) -> None:
    """Progress of a (re)fit of the laws, on stderr when a person watches it (a terminal)."""
    if sys.stderr.isatty():
        typer.echo(message, err=True)


# The band options, shared by `recommend` and `report` (planner.band: the criterion and its thresholds).
BandCriterionOpt = Annotated[str, typer.Option("--band-criterion", metavar="compute|deficit|loss", help="Band criterion: compute (default: reaching the best shape's loss costs at most --max-overhead more training compute than the cheapest shape; scale-free), deficit (only the compute to make up the loss deficit, FLOPs per token not compared) or loss (within --tolerance of the best total loss, the paper's wording at 1.5B).")]
MaxOverheadOpt = Annotated[float, typer.Option("--max-overhead", help="Compute criterion: extra compute a band shape may need, as a fraction (0.2 = 20%, the paper's 1%-of-loss band at 1.5B).")]
ToleranceOpt = Annotated[float, typer.Option("--tolerance", help="Loss criterion: N:L within this relative loss of the best (0.01 = 1%).")]
ConfidenceOpt = Annotated[float, typer.Option("--confidence", help="The pick must be in the band for at least this share of the laws' samples.")]
