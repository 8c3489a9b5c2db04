"""The reproduction plan: the experiments of Dey et al. 2025 at a scale this machine allows.

One command (`cp-plan reproduce --scale S`) runs, in order and resumably (every step skips what
the run database already holds):

1. a base-LR scan at the base shape (all parameterizations coincide there, PARAMETERIZATION.md);
   the best grid LR becomes η_base for everything after it;
2. coordinate checks across depth and width, recorded in the database;
3. fixed-P shape sweeps (SP, μP, CompleteP at every P; α = 0.5 at one P), tpp tokens per param,
   all but the largest P;
4. LR transfer across depth at the base width and a fixed token budget (μP, CompleteP);
5. the shape sweep at the largest P.

Scales are data (``SCALES``), so a larger machine adds one entry rather than code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from planner.errors import CpPlanError


@dataclass(frozen=True)
class Scale:
    """One reproduction scale. Shapes use a fixed head size ``d_head``."""

    name: str
    params: tuple[float, ...]  # target non-embedding P of the shape sweeps
    ratios: tuple[float, ...]  # N:L asked at every P (shapes that round alike are trained once)
    alpha05_params: tuple[float, ...]  # P values that also get α = 0.5
    lrs: tuple[float, ...]  # base-LR grid (factor-2 steps)
    lr_depths: tuple[int, ...]  # depths of the LR-transfer sweep (at the base width)
    lr_tokens: int  # fixed token budget of every LR-sweep run
    lr_parameterizations: tuple[str, ...] = ("mup", "completep", "sp")
    coord_depths: tuple[int, ...] = (2, 4, 8, 16, 32)
    coord_widths: tuple[int, ...] = (32, 64, 128, 256)
    coord_steps: int = 10
    coord_lr: float = 1e-3  # constant LR of the coordinate checks, as the paper's Fig. 7
    tpp: float = 20.0
    d_head: int = 16
    base_n_embd: int = 64
    base_n_layer: int = 2
    batch_size: int = 32
    seq_len: int = 64
    device: str = "auto"
    dtype: str = "float32"
    extra: dict = field(default_factory=dict)


SCALES: dict[str, Scale] = {
    # For tests and a first look: minutes on 2 CPU cores.
    "tiny": Scale(
        name="tiny", params=(2e4,), ratios=(4, 16, 64), alpha05_params=(), lrs=(5e-3, 1e-2, 2e-2),
        lr_depths=(2, 4), lr_tokens=50_000, lr_parameterizations=("mup", "completep"),
        coord_depths=(2, 8), coord_widths=(32, 64), coord_steps=3, tpp=5.0, batch_size=16,
        seq_len=32, base_n_embd=32),
    # The shipped default database: about two hours on 2 otherwise idle CPU cores.
    "cpu": Scale(
        name="cpu", params=(2.5e4, 5e4, 1e5, 2e5), ratios=(2, 4, 8, 16, 32, 64, 128),
        alpha05_params=(5e4,), lrs=(2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2, 8e-2),
        lr_depths=(2, 4, 8, 16), lr_tokens=500_000, lr_parameterizations=("mup", "completep")),
    # A GPU: ~1M–30M non-embedding parameters, bf16.
    "gpu": Scale(
        name="gpu", params=(1e6, 3e6, 1e7, 3e7), ratios=(4, 8, 16, 32, 64, 128, 256),
        alpha05_params=(3e6,), lrs=(1.25e-3, 2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2, 8e-2),
        lr_depths=(2, 4, 8, 16, 32), lr_tokens=50_000_000, d_head=64, base_n_embd=256,
        base_n_layer=2, batch_size=64, seq_len=256, device="cuda", dtype="bfloat16",
        coord_widths=(128, 256, 512, 1024)),
}


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise CpPlanError(f"unknown scale {name!r}; use one of {', '.join(SCALES)}")
    return SCALES[name]


def base_config(scale: Scale, **overrides):
    from trainer.config import TrainConfig

    values = dict(parameterization="completep", n_embd=scale.base_n_embd, n_layer=scale.base_n_layer,
                  d_head=scale.d_head, base_n_embd=scale.base_n_embd, base_n_layer=scale.base_n_layer,
                  batch_size=scale.batch_size, seq_len=scale.seq_len, device=scale.device,
                  dtype=scale.dtype, n_tokens=scale.lr_tokens)
    values.update(overrides)
    return TrainConfig.from_dict(values)


def best_base_lr(db, scale: Scale) -> tuple[float, dict]:
    """η_base: the grid LR with the lowest final loss at the base shape (CompleteP = μP there)."""
    from trainer.sweep import SKIP_STATUSES

    losses = {}
    for lr in scale.lrs:
        cfg = base_config(scale, lr=lr)
        runs = db.runs(where={"config_hash": cfg.config_hash()}, statuses=SKIP_STATUSES)
        done = runs[runs["status"] == "done"]["loss"].astype(float)
        losses[lr] = float(done.min()) if len(done) else float("inf")
    best = min(losses, key=losses.get)
    if losses[best] == float("inf"):
        raise CpPlanError("every base-LR run diverged or failed; widen --lrs toward smaller values")
    return best, losses


def run_reproduction(scale: Scale, db, workers: int = 1, only: tuple[str, ...] | None = None,
                     log=print) -> dict:
    """Run the plan; returns per-step sweep counts and η_base. Resumable: done runs are skipped."""
    from trainer.coord import coord_check
    from trainer.sweep import lr_sweep, run_sweep, shape_sweep

    steps = only or ("base-lr", "shape", "lr", "coord")
    summary: dict = {"scale": scale.name}
    # 1. base LR at the base shape (needed by every later step)
    planned = lr_sweep(base_config(scale), list(scale.lrs), [scale.base_n_layer], None, [("completep", 1.0)])
    summary["base-lr"] = run_sweep(planned, db, "lr", "base-lr", workers, log=log)
    lr, losses = best_base_lr(db, scale)
    summary["base_lr"] = lr
    summary["base_lr_losses"] = losses
    log(f"η_base = {lr:g} (final loss per grid LR: {', '.join(f'{k:g}: {v:.4f}' for k, v in losses.items())})")
    base = base_config(scale, lr=lr)

    def shape_step(p):
        names = [("sp", None), ("mup", None), ("completep", 1.0)]
        if p in scale.alpha05_params:
            names.append(("alpha0.5", 0.5))
        planned = shape_sweep(base, p, list(scale.ratios), names, scale.tpp)
        summary[f"shape-P{p:.3g}"] = run_sweep(planned, db, "shape", f"shape-P{p:.3g}", workers, log=log)

    # Cheap steps first and the most expensive (the largest P) last, so an interrupted plan has
    # every experiment at some scale; a rerun resumes where it stopped.
    if "coord" in steps:
        names = [("mup", None), ("alpha0.5", 0.5), ("completep", 1.0)]
        existing = db.coord_rows()
        for axis, widths, depths in (("depth", [base.n_embd], list(scale.coord_depths)),
                                     ("width", list(scale.coord_widths), [scale.base_n_layer])):
            if len(existing) and (existing["axis"] == axis).any():
                log(f"coordinate check across {axis}: already recorded, skipped")
                continue
            cfg = base_config(scale, lr=scale.coord_lr, n_embd=min(widths), n_layer=min(depths),
                              base_n_embd=min(widths), base_n_layer=min(depths), batch_size=8,
                              device="cpu", dtype="float32")
            rows = coord_check(cfg, names, widths, depths, scale.coord_steps, axis, log=log)
            db.add_coord_rows(rows)
            summary[f"coord-{axis}"] = len(rows)
    params = sorted(scale.params)
    if "shape" in steps:
        for p in params[:-1]:
            shape_step(p)
    if "lr" in steps:
        names = [(n, 1.0 if n == "completep" else None) for n in scale.lr_parameterizations]
        planned = lr_sweep(base, list(scale.lrs), list(scale.lr_depths), None, names)
        summary["lr-transfer"] = run_sweep(planned, db, "lr", "lr-transfer", workers, log=log)
    if "shape" in steps:
        shape_step(params[-1])
    return summary
