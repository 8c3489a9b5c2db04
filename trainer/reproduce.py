"""The reproduction plan: the experiments of Dey et al. 2025 at a scale this machine allows.

One command (`cp-plan reproduce --scale S`) runs, in order and resumably (every step skips what
the run database already holds):

1. base-LR scans at the base shape, each with ``base_lr_seeds`` seeds at its best grid LR. μP,
   CompleteP and α = 0.5 build the same network there (m_N = m_L = 1), so one scan (named
   CompleteP) gives their η_base, which the rules then transfer; SP differs at the base shape
   (1/√d_head attention scale) and, when the scale lists it, gets its own scan, whose η_base it
   keeps at every shape, as the paper does;
2. coordinate checks across depth and width, recorded in the database;
3. fixed-P shape sweeps (SP, μP, CompleteP at every P; α = 0.5 at some), ``tpp`` tokens per
   parameter, all but the largest P; several seeds per shape at the P listed in ``seeds``;
   after each sweep the best shape of each parameterization must have two trained shapes on each
   side (by N:L), else shapes are added on the open side (``bracket_rounds`` times at most);
4. LR transfer across depth at the base width and a fixed token budget (μP, CompleteP);
5. the shape sweep at the largest P, bracketed the same way.

Scales are data (``SCALES``), so a larger machine adds one entry rather than code. ``cpu-kjv``
is the plan behind the shipped database, kept so that it stays reproducible run for run
(tests/test_reproduce.py checks every planned config against it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from planner.errors import CpPlanError
from planner.plainjson import stored_config
from planner.shapes import Shape, block_params, make_shape

# ---------------------------------------------------------------------------- scales


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
    corpus: str = "kjv"  # "kjv" or "english" (trainer.corpus; `cp-plan corpus build`)
    # Shapes at each P: None = nearest shape per asked ratio by planner.shapes.shape_for_params
    # (cpu-kjv, as shipped); a factor f = the ratio's nearest shape among every (width multiple of
    # d_head, integer depth) whose P is within [P/f, P·f] (shape_ladder), which keeps 7+ distinct
    # shapes at small P where one depth per width leaves too few.
    shape_tolerance: float | None = None
    seeds: tuple[tuple[float, int], ...] = ()  # (P, k): every shape at P gets seeds 0..k-1 (else seed 0)
    base_lr_parameterizations: tuple[str, ...] = ("completep",)  # one base-LR scan each (see above)
    base_lr_seeds: int = 1  # seeds at each scan's chosen LR (seed 0 is the scan itself)
    bracket_rounds: int = 0  # rounds of shapes added on an open side of the best shape (0: no check)
    comment: str = ""  # what the scale costs and why it is sized so
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if any(p not in self.params for p in tuple(p for p, _ in self.seeds) + self.alpha05_params):
            raise CpPlanError(f"scale {self.name!r}: the P values of seeds and alpha05_params must be among params")
        if self.shape_tolerance is not None and not self.shape_tolerance > 1:
            raise CpPlanError(f"scale {self.name!r}: shape_tolerance={self.shape_tolerance} must be > 1")
        if self.bracket_rounds and self.shape_tolerance is None:
            raise CpPlanError(f"scale {self.name!r}: bracketing needs shape_tolerance (the ladder it extends)")


CPU_COMMENT = """\
The next shipped database: 117 MB of English (`cp-plan corpus build`), context 128, head size 8,
base shape N = 64, L = 2, float32, 20 tokens per parameter, P ≈ 2.5e4 to 4e5 (16x).

Cost, measured on this project's 2-core CPU machine (torch 2.13 CPU, 1 thread per run; two runs
at once lose nothing): at P ≈ 4e5, seq_len 128, batch 32, tokens/s per thread were 27.2k (184x1),
23.1k (128x2), 20.4k (104x3), 17.7k (80x5), 15.0k (64x8), 12.2k (48x14), 10.1k (40x20), 9.4k
(32x31), 6.9k (24x55); 23.6k-27.7k at 2e5, 32k-53k at 1e5, 58k-136k at 2.5e4. Seconds per token
fit 7.46e-12·(6P + 6NV) + 5.63e-11·12LNT + 3.15e-7·L + 1.26e-6 within 8% (attention FLOPs cost
7.5x a weight FLOP at head size 8), plus 6% for evaluation: ``estimate_seconds``.

What fits 8 CPU-hours: the issue's plan as written (3 seeds of 7 shapes x 3 parameterizations at
the two largest scales, 2e5 and 4e5) costs about 12.5 CPU-hours; 3 seeds at 4e5 alone are 63 runs
of 8M tokens, 9.0 h. So the largest scale keeps 2 seeds (42 runs, 6.0 h) and the second largest
is 1e5 (3 seeds, 63 runs, 0.9 h) rather than 2e5 (2.0 h with 3 seeds): P = 2.5e4, 5e4, 1e5, 4e5.
Seed noise is still measured at two scales, 4x apart instead of 2x. Shapes span N:L ≈ 2-184;
deeper ones cost 2-3x per token and the shipped runs never found the optimum there. Base-LR scans
(CompleteP and SP, 3 seeds at each chosen LR), α = 0.5 at 5e4 and LR transfer (depths 2-16, 3e5
tokens) add 0.3 h. Planned: about 7.3 CPU-hours, 3.7 h of wall time with --workers 2
(`cp-plan reproduce --scale cpu --dry-run`). Bracketing is not in that figure: a shape added at
4e5 costs about 0.9 CPU-hours (3 parameterizations x 2 seeds), at 1e5 about 0.15."""

SCALES: dict[str, Scale] = {
    # For tests and a first look: seconds to a minute on 2 CPU cores. Same code path as `cpu`
    # (seeds, two base-LR scans, bracketing) on the KJV, which needs no build step.
    "tiny": Scale(
        name="tiny", params=(4e3, 1.6e4), ratios=(2, 8, 32), alpha05_params=(), lrs=(5e-3, 1e-2, 2e-2),
        lr_depths=(2, 4), lr_tokens=8_000, lr_parameterizations=("mup", "completep"),
        coord_depths=(2, 4), coord_widths=(16, 32), coord_steps=2, tpp=1.0, batch_size=8,
        seq_len=32, d_head=8, base_n_embd=16, shape_tolerance=1.3, seeds=((1.6e4, 2),),
        base_lr_parameterizations=("completep", "sp"), base_lr_seeds=2, bracket_rounds=1),
    # The run database shipped until the `cpu` rebuild is complete: KJV, context 64, head size 16;
    # about three hours on 2 otherwise idle CPU cores. Kept as it is, so it stays reproducible.
    "cpu-kjv": Scale(
        name="cpu-kjv", params=(2.5e4, 5e4, 1e5, 2e5), ratios=(2, 4, 8, 16, 32, 64, 128),
        alpha05_params=(5e4,), lrs=(2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2, 8e-2),
        lr_depths=(2, 4, 8, 16), lr_tokens=500_000, lr_parameterizations=("mup", "completep")),
    # See CPU_COMMENT: about 7.3 CPU-hours before bracketing; built into its own database file.
    "cpu": Scale(
        name="cpu", params=(2.5e4, 5e4, 1e5, 4e5), ratios=(2, 4, 8, 16, 32, 64, 128),
        alpha05_params=(5e4,), lrs=(2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2, 8e-2),
        lr_depths=(2, 4, 8, 16), lr_tokens=300_000, lr_parameterizations=("mup", "completep"),
        seq_len=128, d_head=8, corpus="english", shape_tolerance=1.27, seeds=((1e5, 3), (4e5, 2)),
        base_lr_parameterizations=("completep", "sp"), base_lr_seeds=3, bracket_rounds=2,
        comment=CPU_COMMENT),
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


def seeds_at(scale: Scale, n_params: float) -> tuple[int, ...]:
    """The seeds every shape at ``n_params`` is trained with."""
    return tuple(range(dict(scale.seeds).get(n_params, 1)))


# ---------------------------------------------------------------------------- shapes


def shape_ladder(n_params: float, d_head: int, tolerance: float) -> list[Shape]:
    """Every shape (width a multiple of ``d_head``, integer depth) with non-embedding P within a
    factor ``tolerance`` of ``n_params``, one per distinct N:L (the one nearest P), by N:L."""
    best: dict[float, Shape] = {}
    n_embd = d_head
    while True:
        per_layer = block_params(n_embd)
        if per_layer + 2 * n_embd > n_params * tolerance:
            break
        lo = max(1, math.ceil((n_params / tolerance - 2 * n_embd) / per_layer))
        hi = math.floor((n_params * tolerance - 2 * n_embd) / per_layer)
        for n_layer in range(lo, hi + 1):
            s = make_shape(n_embd, n_layer, d_head)
            key = round(s.ratio, 9)
            if key not in best or abs(math.log(s.n_params / n_params)) < abs(math.log(best[key].n_params / n_params)):
                best[key] = s
        n_embd += d_head
    return sorted(best.values(), key=lambda s: s.ratio)


def pick_shapes(ladder: list[Shape], ratios, n_params: float, exclude=()) -> list[Shape]:
    """For each asked N:L, the ladder shape nearest it in |ln N:L − ln asked| + 2·|ln P' − ln P|
    (a shape far from P trains a different budget, so closeness in P counts double), distinct,
    skipping shapes in ``exclude``; ordered by N:L."""
    taken = {(s.n_embd, s.n_layer) for s in exclude}
    out: list[Shape] = []
    for ratio in ratios:
        free = [s for s in ladder if (s.n_embd, s.n_layer) not in taken]
        if not free:
            break
        s = min(free, key=lambda s: abs(math.log(s.ratio / ratio)) + 2 * abs(math.log(s.n_params / n_params)))
        taken.add((s.n_embd, s.n_layer))
        out.append(s)
    return sorted(out, key=lambda s: s.ratio)


def sweep_shapes(scale: Scale, n_params: float) -> list[Shape]:
    """The shapes a scale asks for at ``n_params`` (before any bracketing)."""
    if scale.shape_tolerance is None:
        from planner.shapes import shape_for_params

        out, seen = [], set()
        for ratio in scale.ratios:
            s = shape_for_params(n_params, ratio, scale.d_head)
            if (s.n_embd, s.n_layer) not in seen:
                seen.add((s.n_embd, s.n_layer))
                out.append(s)
        return out
    ladder = shape_ladder(n_params, scale.d_head, scale.shape_tolerance)
    shapes = pick_shapes(ladder, scale.ratios, n_params)
    if len(shapes) < len(scale.ratios):
        raise CpPlanError(f"scale {scale.name!r}: only {len(shapes)} distinct shapes within "
                          f"×{scale.shape_tolerance} of P={n_params:g}; ask fewer ratios or a larger P")
    return shapes


def open_sides(losses: dict[tuple[int, int], float], min_each_side: int = 2) -> dict[str, int]:
    """How many shapes each side of the best one lacks: ``losses`` maps (n_embd, n_layer) to the
    mean final loss over seeds (inf for a diverged run). {'deep': k, 'wide': k} for sides short
    of ``min_each_side`` trained shapes; empty when the best shape is bracketed."""
    if not losses:
        return {}
    order = sorted(losses, key=lambda s: s[0] / s[1])
    best = min(range(len(order)), key=lambda i: losses[order[i]])
    short = {"deep": min_each_side - best, "wide": min_each_side - (len(order) - 1 - best)}
    return {side: k for side, k in short.items() if k > 0}


def extension_shapes(ladder: list[Shape], shapes: list[Shape], side: str, k: int, step: float,
                     n_params: float) -> list[Shape]:
    """Up to ``k`` ladder shapes beyond the outermost of ``shapes`` on ``side`` ('deep': lower
    N:L, 'wide': higher), nearest the edge's N:L ÷ or × step, step², ... (the sweep's own spacing)."""
    edge = min(s.ratio for s in shapes) if side == "deep" else max(s.ratio for s in shapes)
    beyond = [s for s in ladder if (s.ratio < edge / 1.2 if side == "deep" else s.ratio > edge * 1.2)]
    factor = 1 / step if side == "deep" else step
    return pick_shapes(beyond, [edge * factor ** (i + 1) for i in range(k)], n_params, exclude=shapes)


# ---------------------------------------------------------------------------- configs


def base_config(scale: Scale, **overrides):
    from trainer.config import TrainConfig

    values = dict(parameterization="completep", n_embd=scale.base_n_embd, n_layer=scale.base_n_layer,
                  d_head=scale.d_head, base_n_embd=scale.base_n_embd, base_n_layer=scale.base_n_layer,
                  batch_size=scale.batch_size, seq_len=scale.seq_len, device=scale.device,
                  dtype=scale.dtype, n_tokens=scale.lr_tokens)
    if scale.corpus != "kjv":  # the default; left out so cpu-kjv's configs keep their hashes
        values["corpus"] = scale.corpus
    values.update(overrides)
    return TrainConfig.from_dict(values)


def scan_of(scale: Scale, parameterization: str) -> str:
    """Which base-LR scan gives a parameterization its η_base: SP's own when the scale scans SP,
    else the CompleteP scan (the same network as μP and depth-α at the base shape)."""
    return "sp" if parameterization == "sp" and "sp" in scale.base_lr_parameterizations else "completep"


def _scan_names(scale: Scale) -> list[tuple[str, float | None]]:
    return [(p, 1.0 if p == "completep" else None) for p in scale.base_lr_parameterizations]


def best_base_lr(db, scale: Scale, parameterization: str = "completep") -> tuple[float, dict]:
    """η_base: the grid LR with the lowest final loss at the base shape (seed 0, the scan)."""
    from trainer.sweep import SKIP_STATUSES

    losses = {}
    for lr in scale.lrs:
        cfg = base_config(scale, lr=lr, parameterization=parameterization)
        runs = db.runs(where={"config_hash": cfg.config_hash()}, statuses=SKIP_STATUSES)
        done = runs[runs["status"] == "done"]["loss"].astype(float)
        losses[lr] = float(done.min()) if len(done) else float("inf")
    best = min(losses, key=losses.get)
    if losses[best] == float("inf"):
        raise CpPlanError(f"every {parameterization} base-LR run diverged, failed or is missing; "
                          "run the base-LR scan (cp-plan reproduce) or widen the grid toward smaller LRs")
    return best, losses


def shape_runs(bases: dict, shapes: list[Shape], names, tpp: float, seeds) -> list:
    """Planned runs: every seed × parameterization × shape, seed-major (an interrupted sweep has
    every shape at seed 0 before any replicate)."""
    from trainer.sweep import PlannedRun

    runs = []
    for seed in seeds:
        for name, alpha in names:
            for s in shapes:
                cfg = dataclasses.replace(bases[name], parameterization=name, alpha=alpha, n_embd=s.n_embd,
                                          n_layer=s.n_layer, n_tokens=int(round(tpp * s.n_params)), seed=seed)
                runs.append(PlannedRun(cfg, f"{name} P={s.n_params:,} N={s.n_embd} L={s.n_layer} "
                                            f"(N:L={s.ratio:.3g}) seed {seed}"))
    return runs


def shape_names(scale: Scale, n_params: float) -> list[tuple[str, float | None]]:
    names = [("sp", None), ("mup", None), ("completep", 1.0)]
    if n_params in scale.alpha05_params:
        names.append(("alpha0.5", 0.5))
    return names


def planned_runs(scale: Scale, base_lrs: dict[str, float]) -> dict[str, list]:
    """The plan before bracketing, per step, given each scan's η_base ({'completep': η, 'sp': η});
    for ``--dry-run`` and the reproducibility test. Coordinate checks are not runs."""
    from trainer.sweep import PlannedRun, lr_sweep, shape_sweep

    plan: dict[str, list] = {}
    for p in scale.base_lr_parameterizations:
        names = [(p, 1.0 if p == "completep" else None)]
        plan[f"base-lr-{p}"] = lr_sweep(base_config(scale), list(scale.lrs), [scale.base_n_layer], None, names)
        if p in base_lrs:
            plan[f"base-lr-{p}"] += [PlannedRun(base_config(scale, parameterization=p, lr=base_lrs[p], seed=s),
                                                f"{p} base shape lr={base_lrs[p]:g} seed {s}")
                                     for s in range(1, scale.base_lr_seeds)]
    bases = {n: base_config(scale, lr=base_lrs[scan_of(scale, n)]) for n in ("sp", "mup", "completep", "alpha0.5")
             if scan_of(scale, n) in base_lrs}
    if len(bases) < 4:
        return plan
    for p in sorted(scale.params):
        names = shape_names(scale, p)
        if scale.shape_tolerance is None:
            plan[f"shape-P{p:.3g}"] = shape_sweep(bases["completep"], p, list(scale.ratios), names, scale.tpp)
        else:
            plan[f"shape-P{p:.3g}"] = shape_runs(bases, sweep_shapes(scale, p), names, scale.tpp, seeds_at(scale, p))
    names = [(n, 1.0 if n == "completep" else None) for n in scale.lr_parameterizations]
    plan["lr-transfer"] = lr_sweep(bases["completep"], list(scale.lrs), list(scale.lr_depths), None, names)
    return plan


def estimate_seconds(cfg) -> float:
    """CPU seconds of one run on this project's 2-core machine, 1 thread (see CPU_COMMENT: fit to
    runs at seq_len 128, batch 32, float32, within 8%), plus 6% for evaluation passes."""
    n_tokens = cfg.steps * cfg.tokens_per_step
    weight_flops = 6 * cfg.n_params + 6 * cfg.n_embd * cfg.vocab_size
    attention_flops = 12 * cfg.n_layer * cfg.n_embd * cfg.seq_len
    per_token = 7.46e-12 * weight_flops + 5.63e-11 * attention_flops + 3.15e-7 * cfg.n_layer + 1.26e-6
    return 1.06 * n_tokens * per_token


def check_one_corpus(db, cfg) -> None:
    """Refuse to add runs on one text to a database holding trained runs on another: the laws
    would mix two loss scales silently."""
    runs = db.runs(where={"source": "trained"}, statuses=None)
    if not len(runs) or "config_json" not in runs:
        return
    found = set()
    for text in runs["config_json"].dropna():
        c = stored_config(text) or {}
        found.add((c.get("corpus", "kjv"), c.get("corpus_sha256")))
    other = found - {(cfg.corpus, cfg.corpus_sha256)}
    if other:
        name, sha = sorted(other, key=str)[0]
        raise CpPlanError(f"{db.display} holds runs on corpus {name!r}{f' ({sha[:12]}…)' if sha else ''}; this scale "
                          f"trains on {cfg.corpus!r}{f' ({cfg.corpus_sha256[:12]}…)' if cfg.corpus_sha256 else ''}; "
                          "build it into its own database, e.g. --db data/runs/cpu-english.sqlite")


# ---------------------------------------------------------------------------- the plan


def run_reproduction(scale: Scale, db, workers: int = 1, only: tuple[str, ...] | None = None,
                     log=print) -> dict:
    """Run the plan; returns per-step sweep counts, η_base per scan and bracketing. Resumable:
    done runs are skipped, so a rerun continues where an interrupted one stopped."""
    from trainer.coord import coord_check
    from trainer.sweep import PlannedRun, lr_sweep, run_sweep, shape_sweep

    steps = only or ("base-lr", "shape", "lr", "coord")
    summary: dict = {"scale": scale.name}
    check_one_corpus(db, base_config(scale))
    # 1. base-LR scans at the base shape (needed by every later step), then seeds at the chosen LR
    base_lrs: dict[str, float] = {}
    for p in scale.base_lr_parameterizations:
        sid = "base-lr" if p == "completep" else f"base-lr-{p}"
        planned = lr_sweep(base_config(scale), list(scale.lrs), [scale.base_n_layer], None,
                           [(p, 1.0 if p == "completep" else None)])
        summary[sid] = run_sweep(planned, db, "lr", sid, workers, log=log)
        lr, losses = best_base_lr(db, scale, p)
        base_lrs[p] = lr
        log(f"η_base ({'μP, CompleteP, α' if p == 'completep' else p}) = {lr:g} (final loss per grid LR: "
            f"{', '.join(f'{k:g}: {v:.4f}' for k, v in losses.items())})")
        summary[f"base_lr_losses_{p}"] = losses
        if scale.base_lr_seeds > 1:
            seeds = [PlannedRun(base_config(scale, parameterization=p, lr=lr, seed=s), f"{p} base shape lr={lr:g} seed {s}")
                     for s in range(1, scale.base_lr_seeds)]
            summary[f"{sid}-seeds"] = run_sweep(seeds, db, "lr", f"{sid}-seeds", workers, log=log)
    summary["base_lr"] = base_lrs["completep"]
    summary["base_lrs"] = base_lrs
    bases = {n: base_config(scale, lr=base_lrs[scan_of(scale, n)]) for n in ("sp", "mup", "completep", "alpha0.5")}
    base = bases["completep"]

    def shape_step(p):
        names = shape_names(scale, p)
        sid = f"shape-P{p:.3g}"
        if scale.shape_tolerance is None:  # cpu-kjv: exactly the shipped sweep
            summary[sid] = run_sweep(shape_sweep(base, p, list(scale.ratios), names, scale.tpp), db,
                                     "shape", sid, workers, log=log)
            return
        ladder = shape_ladder(p, scale.d_head, scale.shape_tolerance)
        shapes = sweep_shapes(scale, p)
        step = math.exp(math.log(max(scale.ratios) / min(scale.ratios)) / max(1, len(scale.ratios) - 1))
        seeds = seeds_at(scale, p)
        for phase in dict.fromkeys([(0,), seeds]):  # every shape at seed 0 first, then the replicates
            for round_ in range(scale.bracket_rounds + 1):
                planned = shape_runs(bases, shapes, names, scale.tpp, phase)
                summary[sid] = run_sweep(planned, db, "shape", sid, workers, log=log)
                status = bracketing(db, planned)
                summary[f"{sid}-bracket"] = status
                open_ = {}
                for name, sides in status.items():
                    for side, k in sides.items():
                        open_[side] = max(open_.get(side, 0), k)
                if not open_ or round_ == scale.bracket_rounds:
                    if open_:
                        log(f"{sid}: best shape still not bracketed after {scale.bracket_rounds} round(s): "
                            + "; ".join(f"{n}: {s}" for n, s in status.items() if s))
                    break
                added = []
                for side, k in open_.items():
                    new = extension_shapes(ladder, shapes, side, k, step, p)
                    if not new:
                        log(f"{sid}: no {'deeper' if side == 'deep' else 'wider'} shape within ×{scale.shape_tolerance} of P; the best shape "
                            f"stays on the {side} edge")
                    added += new
                if not added:
                    break
                log(f"{sid}: best shape not bracketed ({'; '.join(f'{n}: {s}' for n, s in status.items() if s)}); "
                    f"adding {', '.join(f'{s.n_embd}x{s.n_layer} (N:L {s.ratio:.3g})' for s in added)}")
                shapes = sorted(shapes + added, key=lambda s: s.ratio)
        summary[f"{sid}-shapes"] = [[s.n_embd, s.n_layer] for s in shapes]

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


def bracketing(db, planned) -> dict[str, dict[str, int]]:
    """Per parameterization, the sides of its best shape (lowest mean final loss over seeds)
    short of two trained shapes: {'completep': {'wide': 1}, ...}; {} entries when bracketed."""
    import numpy as np

    hashes = [r.config.config_hash() for r in planned]
    runs = db.runs(where={"config_hash": hashes}, statuses=("done", "diverged"))
    out: dict[str, dict[str, int]] = {}
    by_name: dict[str, dict[tuple[int, int], list[float]]] = {}
    for r in planned:
        by_name.setdefault(r.config.parameterization, {})
    for row in runs.itertuples():
        loss = float(row.loss) if row.status == "done" and row.loss is not None else float("inf")
        by_name.setdefault(row.parameterization, {}).setdefault((int(row.n_embd), int(row.n_layer)), []).append(
            loss if math.isfinite(loss) else float("inf"))
    for name, shapes in by_name.items():
        out[name] = open_sides({s: float(np.mean(v)) for s, v in shapes.items()})
    return out


def dry_run(scale: Scale, db) -> dict:
    """What the plan trains, what the database already holds and the CPU time left, per step
    (``estimate_seconds``; bracketing and coordinate checks not counted). Where a base-LR scan is
    not done yet, the grid's middle LR stands in for η_base (the cost does not depend on it)."""
    base_lrs = {}
    for p in scale.base_lr_parameterizations:
        try:
            base_lrs[p] = best_base_lr(db, scale, p)[0] if db is not None else scale.lrs[len(scale.lrs) // 2]
        except CpPlanError:
            base_lrs[p] = scale.lrs[len(scale.lrs) // 2]
    steps = {}
    for step, runs in planned_runs(scale, base_lrs).items():
        hashes = list(dict.fromkeys(r.config.config_hash() for r in runs))
        done = set()
        if db is not None and hashes:
            held = db.runs(where={"config_hash": hashes}, statuses=("done", "diverged"))
            done = set(held["config_hash"]) if len(held) else set()
        seconds = {r.config.config_hash(): estimate_seconds(r.config) for r in runs}
        steps[step] = {"runs": len(hashes), "done": len(done & set(hashes)),
                       "n_tokens": sum(r.config.steps * r.config.tokens_per_step for r in runs),
                       "cpu_hours": sum(seconds.values()) / 3600,
                       "cpu_hours_left": sum(v for h, v in seconds.items() if h not in done) / 3600}
    total = {k: sum(s[k] for s in steps.values()) for k in ("runs", "done", "n_tokens", "cpu_hours", "cpu_hours_left")}
    return {"scale": scale.name, "corpus": scale.corpus, "steps": steps, "total": total}
