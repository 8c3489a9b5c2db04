"""Sweeps: fixed-parameter width:depth shape sweeps and LR-transfer sweeps (Dey et al. 2025, §4–5).

A sweep is a list of frozen :class:`TrainConfig` objects plus a runner that trains the ones the
run database does not already hold. Resumability comes from the database: a config whose hash has
a ``done`` run (or a ``diverged`` one: training is deterministic, so re-running it diverges again)
is skipped. A run left ``running`` by a killed process is picked up again from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass

from planner.errors import CpPlanError
from planner.rules import parse_parameterization
from planner.shapes import shape_for_params

SKIP_STATUSES = ("done", "diverged")


@dataclass(frozen=True)
class PlannedRun:
    """One sweep entry: the config and why it is in the sweep (for progress and the record)."""

    config: object  # TrainConfig (kept untyped so this module imports without torch)
    label: str


def parse_list(text: str, kind=float, name: str = "list") -> list:
    """Parse '8,16,32' into numbers; one-line error naming the bad item."""
    out = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = kind(float(item)) if kind is int else kind(item)
        except ValueError:
            raise CpPlanError(f"{name}: {item!r} is not a number; give a comma-separated list like 8,16,32") from None
        if kind is int and float(item) != int(float(item)):
            raise CpPlanError(f"{name}: {item!r} is not an integer")
        out.append(value)
    if not out:
        raise CpPlanError(f"{name} is empty; give a comma-separated list like 8,16,32")
    return out


def parse_parameterizations(text: str, alpha: float | None = None) -> list[tuple[str, float | None]]:
    """'sp,mup,completep' -> canonical (name, alpha) pairs, validated."""
    names = [s.strip() for s in str(text).split(",") if s.strip()]
    if not names:
        raise CpPlanError("--parameterizations is empty; use e.g. sp,mup,completep")
    out = []
    for name in names:
        pair = parse_parameterization(name, alpha if name.strip().lower() == "depth-alpha" else None)
        if pair not in out:
            out.append(pair)
    return out


def shape_sweep(base_config, n_params: float, ratios: list[float],
                parameterizations: list[tuple[str, float | None]], tpp: float) -> list[PlannedRun]:
    """Fixed-P shape sweep: for each N:L, the shape whose non-embedding count is closest to P
    (widths rounded to the head size, depths to integers), trained for tpp × realized P tokens.
    Ratios that round to the same shape are trained once."""
    if not (tpp > 0):
        raise CpPlanError(f"--tpp {tpp} must be positive (tokens per non-embedding parameter, e.g. 20)")
    shapes, seen = [], set()
    for ratio in ratios:
        s = shape_for_params(n_params, ratio, base_config.d_head)
        if (s.n_embd, s.n_layer) not in seen:
            seen.add((s.n_embd, s.n_layer))
            shapes.append((ratio, s))
    runs = []
    for name, alpha in parameterizations:
        for ratio, s in shapes:
            cfg = dataclasses.replace(
                base_config, parameterization=name, alpha=alpha, n_embd=s.n_embd,
                n_layer=s.n_layer, n_tokens=int(round(tpp * s.n_params)))
            runs.append(PlannedRun(cfg, f"{name} P={s.n_params:,} N={s.n_embd} L={s.n_layer} (N:L={s.ratio:.3g}, asked {ratio:g})"))
    return runs


def lr_sweep(base_config, lrs: list[float], depths: list[int] | None, widths: list[int] | None,
             parameterizations: list[tuple[str, float | None]]) -> list[PlannedRun]:
    """LR grid × depths (at the base width) or × widths (at the base depth): the HP-transfer
    experiment of Dey et al. 2025, Fig. 3; base HPs fixed, only η_base varies."""
    if not depths and not widths:
        raise CpPlanError("an LR sweep needs --depths or --widths (e.g. --depths 2,4,8,16)")
    for lr in lrs:
        if not (lr > 0):
            raise CpPlanError(f"learning rate {lr} must be positive; use e.g. --lrs 1e-3,2e-3,4e-3")
    shapes = [(base_config.n_embd, d) for d in depths or []] + [(w, base_config.n_layer) for w in widths or []]
    runs = []
    for name, alpha in parameterizations:
        for n_embd, n_layer in shapes:
            for lr in lrs:
                cfg = dataclasses.replace(base_config, parameterization=name, alpha=alpha,
                                          n_embd=n_embd, n_layer=n_layer, lr=lr)
                runs.append(PlannedRun(cfg, f"{name} N={n_embd} L={n_layer} lr={lr:.3g}"))
    return runs


def _train_one(args):
    """Worker entry (top level so a spawned process can pickle it)."""
    cfg, db_url, sweep, sweep_id, threads = args
    import torch

    from planner.db import RunDB
    from trainer.train import train_run

    if threads:
        torch.set_num_threads(threads)
    return train_run(cfg, RunDB(db_url), progress=False, resume=True, sweep=sweep, sweep_id=sweep_id)


def run_sweep(planned: list[PlannedRun], db, sweep: str, sweep_id: str, workers: int = 1,
              progress: bool = True, log=None) -> dict:
    """Train every planned run the database does not already hold; never stops on a bad run.

    Returns counts: planned, skipped, done, diverged, failed. ``workers`` > 1 trains that many
    runs at once in separate processes (each with cores/workers threads).
    """
    from trainer.train import train_run

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if workers < 1:
        raise CpPlanError(f"--workers {workers} must be ≥ 1")
    todo, skipped = [], 0
    for run in planned:
        existing = db.runs(where={"config_hash": run.config.config_hash()}, statuses=SKIP_STATUSES)
        if len(existing):
            skipped += 1
        else:
            todo.append(run)
    counts = {"planned": len(planned), "skipped": skipped, "done": 0, "diverged": 0, "failed": 0}
    log(f"sweep {sweep_id}: {len(planned)} planned, {skipped} already in the database, {len(todo)} to train")
    start = time.monotonic()

    def report(i, run, record):
        status = record.get("status", "failed")
        counts[status] = counts.get(status, 0) + 1
        elapsed = time.monotonic() - start
        eta = elapsed / i * (len(todo) - i)
        loss = record.get("loss")
        loss_s = f"loss {loss:.4f}" if isinstance(loss, float) else record.get("reason", "")
        if progress:
            log(f"[{i}/{len(todo)}] {status:8s} {run.label}: {loss_s}  "
                f"(elapsed {elapsed:.0f}s, ETA {eta:.0f}s)")

    if workers == 1:
        for i, run in enumerate(todo, 1):
            record = train_run(run.config, db, progress=progress, resume=True, sweep=sweep, sweep_id=sweep_id)
            report(i, run, record)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(_train_one, (run.config, db.url, sweep, sweep_id, threads)): run for run in todo}
            for i, fut in enumerate(as_completed(futures), 1):
                run = futures[fut]
                try:
                    record = fut.result()
                except Exception as exc:  # a worker process died: the run stays re-runnable
                    record = {"status": "failed", "reason": f"worker crashed: {exc!r}"}
                report(i, run, record)
    counts["wall_s"] = round(time.monotonic() - start, 1)
    return counts
