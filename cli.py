"""`cp-plan`: the command line. Commands parse, build a config, call the library, render.

Heavy modules (torch, plotly, scipy, pandas) are imported inside the commands that need them so
that `cp-plan --help` and `cp-plan recommend` start fast; a test proves torch and plotly stay out.
Every :class:`planner.errors.CpPlanError` becomes one line on stderr and exit code 1 (bad usage
exits 2, as click does); set CP_PLAN_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import json
import math
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from planner.errors import CpPlanError

app = typer.Typer(
    name="cp-plan",
    help="Plan language-model shapes from measured runs: CompleteP vs μP vs SP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="List, show, export and import runs in the run database.", no_args_is_help=True)
sweep_app = typer.Typer(help="Run sweeps: fixed-parameter shape sweeps and LR-transfer sweeps.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(sweep_app, name="sweep")

DbOpt = Annotated[
    Optional[str],
    typer.Option("--db", help="Run database: a SQLite path or SQLAlchemy URL "
                 "(default: $CP_PLAN_DB, else data/runs/runs.sqlite in the project)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _emit_json(obj) -> None:
    """Print plain JSON (NaN/inf become null so any JSON parser reads it)."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if hasattr(x, "item") and not isinstance(x, (str, bytes)):
            try:
                return clean(x.item())
            except (ValueError, TypeError):
                pass
        return x

    typer.echo(json.dumps(clean(obj), indent=2, default=str))


def _err(message: str) -> None:
    typer.echo(f"cp-plan: error: {message}", err=True)


# ---------------------------------------------------------------- hparams (planner.rules)


class ParamName(str, Enum):
    sp = "sp"
    mup = "mup"
    completep = "completep"
    alpha05 = "alpha0.5"
    depth_alpha = "depth-alpha"


@app.command()
def hparams(
    parameterization: Annotated[str, typer.Option("--parameterization", "-p", help="sp, mup, completep, alpha0.5 or depth-alpha (with --alpha).")],
    n_embd: Annotated[int, typer.Option(help="Target width N.")],
    n_layer: Annotated[int, typer.Option(help="Target depth L (transformer blocks).")],
    base_n_embd: Annotated[int, typer.Option(help="Width of the base shape whose HPs were tuned.")] = 256,
    base_n_layer: Annotated[int, typer.Option(help="Depth of the base shape.")] = 2,
    lr: Annotated[float, typer.Option(help="η_base: AdamW peak LR tuned at the base shape.")] = 3e-3,
    init_std: Annotated[float, typer.Option(help="σ_base: init std at the base shape.")] = 0.02,
    weight_decay: Annotated[float, typer.Option(help="λ_base: coupled AdamW weight decay.")] = 0.1,
    eps: Annotated[float, typer.Option(help="ε_base: AdamW epsilon.")] = 1e-8,
    alpha: Annotated[Optional[float], typer.Option(help="Depth exponent α in [0.5, 1] for depth-alpha.")] = None,
    d_head: Annotated[int, typer.Option(help="Head size (fixed as width grows).")] = 64,
    json_out: JsonOpt = False,
) -> None:
    """Print the per-group hyperparameters a shape gets under a parameterization."""
    from planner.rules import BaseHParams, resolve_shape
    from planner.shapes import check_width

    check_width(n_embd, d_head)
    check_width(base_n_embd, d_head)
    rules = resolve_shape(parameterization, n_embd, n_layer, base_n_embd, base_n_layer,
                          BaseHParams(lr=lr, init_std=init_std, weight_decay=weight_decay, eps=eps), alpha)
    out = rules.to_dict()
    out.update(n_embd=n_embd, n_layer=n_layer, base_n_embd=base_n_embd, base_n_layer=base_n_layer,
               d_head=d_head, n_head=n_embd // d_head, attn_scale=rules.attn_scale(d_head))
    if json_out:
        _emit_json(out)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{rules.parameterization}"
                  + (f" (α = {rules.alpha:g})" if rules.alpha is not None else "")
                  + f": N={n_embd} L={n_layer}, m_N={rules.width_mult:g}, m_L={rules.depth_mult:g}")
    for col in ("group", "init", "init std", "peak LR", "LR mult", "weight decay", "AdamW ε"):
        table.add_column(col)
    for g in rules.groups.values():
        table.add_row(g.group, g.init, "—" if g.init_std is None else f"{g.init_std:.4g}",
                      f"{g.lr:.4g}", f"{g.lr_mult:.4g}", f"{g.weight_decay:.4g}", f"{g.eps:.4g}")
    console = Console()
    console.print(table)
    console.print(f"residual branch multiplier: {rules.residual_mult:.4g}   "
                  f"logit multiplier: {rules.output_mult:.4g}   embedding multiplier: {rules.input_mult:.4g}   "
                  f"attention scale: {rules.attn_scale_kind} = {rules.attn_scale(d_head):.4g}")


# ---------------------------------------------------------------- runs (planner.db)
# (run database commands go here)

# ---------------------------------------------------------------- train (trainer)
# (train command goes here)

# ---------------------------------------------------------------- sweeps and coordinate check (trainer)
# (sweep shape, sweep lr and coord-check go here)

# ---------------------------------------------------------------- fit (planner.laws)
# (fit command goes here)

# ---------------------------------------------------------------- recommend (planner.recommend)
# (recommend command goes here)

# ---------------------------------------------------------------- report (reports)
# (report and reproduce commands go here)


def main() -> None:
    """Console-script entry: run the app, turning CpPlanError into one line and exit 1."""
    try:
        app()  # standalone: click reports usage errors itself and exits 2
    except CpPlanError as exc:
        if os.environ.get("CP_PLAN_DEBUG"):
            raise
        _err(str(exc))
        sys.exit(1)

if __name__ == "__main__":
    main()
