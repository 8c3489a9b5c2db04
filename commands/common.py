"""Options, output helpers and errors shared by every command group."""

# (no `from __future__ import annotations`: typer would eval every string annotation of every command at each start)

import functools
import inspect
import json
import sys
from dataclasses import dataclass
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
    """--bootstrap, checked before anything runs (one line: planner.fitter.check_bootstrap)."""
    from planner.fitter import check_bootstrap

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


# ---------------------------------------------------------------- option groups
def option_group(group: type, options: tuple):
    """A decorator: the command's parameter annotated ``group`` becomes ``options`` (name, typer
    annotation, default; in --help order) on the command line, and the command receives them as
    one ``group(...)`` object. typer reads the rewritten signature."""

    def decorate(fn):
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        i = next(k for k, q in enumerate(params) if q.annotation is group)
        name = params[i].name
        params[i:i + 1] = [inspect.Parameter(opt, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                             annotation=ann) for opt, ann, default in options]

        @functools.wraps(fn)
        def command(**kwargs):
            kwargs[name] = group(**{opt: kwargs.pop(opt) for opt, _, _ in options})
            return fn(**kwargs)

        command.__signature__ = sig.replace(parameters=params)
        command.__annotations__ = {q.name: q.annotation for q in params}
        del command.__wrapped__  # typer reads the new signature, not fn's
        return command

    return decorate


@dataclass(frozen=True)
class BaseShape:
    """The base shape where the base hyperparameters were tuned, and their values there: what
    `train` and `hparams` share (planner.rules scales them to the target shape)."""

    base_n_embd: int
    base_n_layer: int
    lr: float
    init_std: float
    weight_decay: float
    eps: float

    def hparams(self):
        """The base values as planner.rules.BaseHParams."""
        from planner.rules import BaseHParams

        return BaseHParams(lr=self.lr, init_std=self.init_std, weight_decay=self.weight_decay, eps=self.eps)


BASE_SHAPE_OPTIONS = (
    ("base_n_embd", Annotated[int, typer.Option("--base-n-embd", help="Width N_base where the base HPs were tuned (m_N = N / N_base).")], 256),
    ("base_n_layer", Annotated[int, typer.Option("--base-n-layer", help="Depth L_base where the base HPs were tuned (m_L = L / L_base).")], 2),
    ("lr", Annotated[float, typer.Option("--lr", help="η_base: peak AdamW LR tuned at the base shape.")], 3e-3),
    ("init_std", Annotated[float, typer.Option("--init-std", help="σ_base: init std at the base shape.")], 0.02),
    ("weight_decay", Annotated[float, typer.Option("--weight-decay", help="λ_base: coupled AdamW weight decay.")], 0.1),
    ("eps", Annotated[float, typer.Option("--eps", help="ε_base: AdamW epsilon.")], 1e-8),
)
with_base_shape_options = option_group(BaseShape, BASE_SHAPE_OPTIONS)
