"""Sweeps: fixed-parameter width:depth shape sweeps and LR-transfer sweeps (Dey et al. 2025, §4–5).

A sweep is a list of frozen :class:`TrainConfig` objects plus a runner that trains the ones the
run database does not already hold. Resumability comes from the database: a config whose hash has
a ``done`` run (or a ``diverged`` one: training is deterministic, so re-running it diverges again)
is skipped. A run left ``running`` by a killed process is picked up again from its checkpoint.
The runner queues the configs in the database and workers claim them (:mod:`trainer.cluster`), so
a sweep can spread over processes, Slurm jobs and machines that share one database.
"""

from __future__ import annotations

import dataclasses
import math
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


def run_sweep(planned: list[PlannedRun], db, sweep: str, sweep_id: str, workers: int = 1,
              progress: bool = True, log=None, *, launcher: str = "local", lease_s: float | None = None,
              max_attempts: int | None = None, executor=None, slurm: dict | None = None,
              wait: bool = True) -> dict:
    """Train every planned run the database does not already hold; never stops on a bad run.

    The planned configs go into the run database as 'pending' runs (a config with a 'done' or
    'diverged' run is skipped; a 'failed' one, or one left 'running' by a dead process, is queued
    again and resumes from its checkpoint), then workers claim and train them
    (:mod:`trainer.cluster`): with ``launcher='local'``, this process when ``workers`` is 1, else
    ``workers`` processes (cores/workers threads each); with ``launcher='slurm'``, ``workers``
    Slurm jobs through submitit (``slurm``: partition, time_min, gpus_per_node, folder; or a
    ready submitit ``executor``). A run that fails is retried once. Returns counts: planned,
    skipped, done, diverged, failed, pending (left unfinished: another worker still has it, or
    ``wait=False``), wall_s.
    """
    from planner.db import DEFAULT_LEASE_S, DEFAULT_MAX_ATTEMPTS, local_worker_id
    from trainer import cluster

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise CpPlanError(f"--workers {workers} must be an integer ≥ 1")
    if launcher not in cluster.LAUNCHERS:
        raise CpPlanError(f"--launcher {launcher!r} is not one of {', '.join(cluster.LAUNCHERS)}")
    lease_s = cluster.check_lease(DEFAULT_LEASE_S if lease_s is None else lease_s)
    max_attempts = DEFAULT_MAX_ATTEMPTS if max_attempts is None else max_attempts
    if launcher == "slurm" and executor is None:  # fail before queueing anything
        executor = cluster.slurm_executor(**(slurm or {}))
        if db.backend == "sqlite":
            log(f"warning: Slurm workers on other nodes must reach {db.display}; SQLite needs a local disk "
                "(not NFS/Lustre/GPFS): share a PostgreSQL database instead (--db postgresql://...)")

    labels: dict[str, str | None] = {}
    items = []
    for run in planned:
        cfg = run.config
        h = cfg.config_hash()
        if h not in labels:  # the same config planned twice is trained once
            labels[h] = run.label
            items.append((cfg.to_dict(), h, dict(sweep=sweep, sweep_id=sweep_id, n_params=cfg.n_params,
                                                 n_head=cfg.n_head, vocab_size=cfg.vocab_size, steps=cfg.steps)))
    states = db.enqueue_many(items)  # the whole sweep is queued, or nothing
    skipped = len(planned) - len(items)
    held = 0
    for (_, h, _), (_, state) in zip(items, states):
        if state == "skipped":
            skipped += 1
            labels[h] = None
        held += state == "held"
    todo = [h for h, label in labels.items() if label is not None]
    counts = {"planned": len(planned), "skipped": skipped, "done": 0, "diverged": 0, "failed": 0, "pending": 0}
    log(f"sweep {sweep_id}: {len(planned)} planned, {skipped} already in the database, {len(todo)} to train"
        + (f" ({held} being trained by another worker)" if held else ""))
    start = time.monotonic()
    if not todo:
        counts["wall_s"] = 0.0
        return counts

    reported: set[str] = set()

    def report(h: str, state: str, loss, reason) -> None:
        reported.add(h)
        i = len(reported)
        elapsed = time.monotonic() - start
        eta = elapsed / i * (len(todo) - i)
        loss_s = f"loss {loss:.4f}" if isinstance(loss, float) and math.isfinite(loss) else (reason or "")
        if progress:
            log(f"[{i}/{len(todo)}] {state:8s} {labels[h]}: {loss_s}  (elapsed {elapsed:.0f}s, ETA {eta:.0f}s)")

    def on_poll(status: dict) -> None:
        for h in todo:
            st = status.get(h)
            if h not in reported and st is not None and st["state"] in ("done", "diverged", "failed"):
                report(h, st["state"], st["loss"], st["reason"])

    if launcher == "local" and workers == 1:
        worker = local_worker_id()

        def on_record(run, record):
            on_poll(db.queue_status(config_hashes=todo, max_attempts=max_attempts))

        cluster.worker_loop(db, config_hashes=todo, lease_s=lease_s, max_attempts=max_attempts,
                            progress=progress, on_record=on_record, worker=worker)
    elif launcher == "local":
        cluster.run_local_workers(db, todo, workers, lease_s=lease_s, max_attempts=max_attempts,
                                  on_poll=on_poll, log=log)
    else:
        jobs = cluster.submit_workers(executor, db, todo, workers, lease_s=lease_s, max_attempts=max_attempts)
        log(f"sweep {sweep_id}: submitted {len(jobs)} worker job(s): {', '.join(str(j.job_id) for j in jobs)}")
        if wait:
            cluster.wait_jobs(jobs, db, todo, lease_s=lease_s, max_attempts=max_attempts, on_poll=on_poll, log=log)

    final = db.queue_status(config_hashes=todo, max_attempts=max_attempts)
    on_poll(final)
    for h in todo:
        state = final.get(h, {"state": "pending"})["state"]
        counts["pending" if state in ("pending", "running") else state] += 1
    counts["wall_s"] = round(time.monotonic() - start, 1)
    return counts
