"""One frozen config → one training run, recorded in the run database.

:func:`train_run` trains the GPT of :mod:`trainer.model` with the AdamW groups of
:mod:`trainer.optim`, validates periodically on fixed held-out batches, checkpoints atomically,
resumes, and writes the run (whole config, loss curve, final validation loss, tokens/s, wall time,
FLOPs with their convention, device, dtype, code version, epochs) to a :class:`planner.db.RunDB`.

It never raises for a bad run: NaN/inf or a loss blow-up ends the run as ``diverged``, any other
exception as ``failed`` with the reason, and the record is returned. Only bad input found before
the run starts (a missing corpus file, an unavailable device) raises :class:`CpPlanError`;
Ctrl-C marks the run ``failed`` ("interrupted") and propagates.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import time
from pathlib import Path

import torch

from planner.errors import CpPlanError
from planner.version import code_version
from planner.shapes import FLOP_CONVENTION, n_params_nonembedding, training_flops
from trainer import distributed
from trainer.config import TrainConfig
from trainer.data import Batches, Corpus, load_corpus
from trainer.model import GPT
from trainer.optim import build_optimizer, lr_multiplier, set_lr

CHECKPOINT_NAME = "checkpoint.ckpt"
BLOWUP_NATS = 3.0  # a loss this far above ln(vocab) (uniform guessing), and above the start, is a blow-up
BLOWUP_PATIENCE = 50  # ... when it lasts this many consecutive steps (or to the end of the run)
PLAIN_PROGRESS_EVERY_S = 10.0  # throttle for progress lines when stderr is not a terminal
DB_PROGRESS_EVERY_S = 5.0  # throttle for progress writes to the run database


# ---------------------------------------------------------------------------- environment
def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an explicit device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CpPlanError(f"device={name!r} but torch sees no CUDA GPU; use --device cpu (or auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise CpPlanError("device='mps' but torch sees no Apple GPU; use --device cpu (or auto)")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


# ---------------------------------------------------------------------------- record
def run_fields(cfg: TrainConfig, corpus: Corpus, device: torch.device, sweep: str,
               sweep_id: str | None) -> dict:
    """The per-run columns known before training (canonical names plus extras)."""
    n_tokens = cfg.steps * cfg.tokens_per_step  # realized: whole batches
    flops = training_flops(cfg.n_embd, cfg.n_layer, cfg.vocab_size, cfg.seq_len, n_tokens)
    # training_flops counts linear biases; remove their 6·P share when the model has none.
    flops -= 6.0 * (n_params_nonembedding(cfg.n_embd, cfg.n_layer) - cfg.n_params) * n_tokens
    return dict(
        parameterization=cfg.parameterization, alpha=cfg.depth_alpha, n_embd=cfg.n_embd,
        n_layer=cfg.n_layer, n_head=cfg.n_head, n_params=cfg.n_params, n_tokens=n_tokens,
        flops=flops, lr=cfg.lr, source="trained", d_head=cfg.d_head,
        base_n_embd=cfg.base_n_embd, base_n_layer=cfg.base_n_layer, init_std=cfg.init_std,
        vocab_size=cfg.vocab_size, seq_len=cfg.seq_len, batch_size=cfg.batch_size,
        steps=cfg.steps, flop_convention=FLOP_CONVENTION, device=describe_device(device),
        dtype=cfg.dtype, code_version=code_version(), sweep=sweep, sweep_id=sweep_id,
        epochs=corpus.epochs(n_tokens),
    )


# ---------------------------------------------------------------------------- checkpoints
def previous_checkpoint(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic write that keeps the previous checkpoint: the state goes to a temporary file in the
    same folder (flushed to disk), the current checkpoint becomes ``<name>.prev``, and the
    temporary file replaces it (os.replace). A checkpoint damaged on disk later, or a crash
    between the two renames, leaves the previous good one to resume from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.replace(path, previous_checkpoint(path))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path, cfg: TrainConfig) -> dict | None:
    """The checkpoint for ``cfg`` at ``path``, else its ``.prev`` (when the newer one is
    unreadable: truncated, corrupt), or None if neither is usable."""
    for candidate in (path, previous_checkpoint(path)):
        if not candidate.is_file():
            continue
        try:
            # weights_only: a checkpoint is plain data (tensors, dicts, lists, numbers); a shared
            # checkpoint directory must not be a way to run code in whoever resumes from it.
            state = torch.load(candidate, map_location="cpu", weights_only=True)
            if not (isinstance(state, dict) and isinstance(state.get("step"), int) and "model" in state):
                raise ValueError("not a cp-plan training checkpoint")
        except Exception as exc:  # unreadable: try the previous one, or start over rather than crash a sweep
            print(f"cp-plan: ignoring unreadable checkpoint {candidate}: {exc}", file=sys.stderr)
            continue
        if state.get("config_hash") != cfg.config_hash():
            print(f"cp-plan: ignoring checkpoint {candidate}: it belongs to another config", file=sys.stderr)
            continue
        if candidate != path:
            print(f"cp-plan: resuming from the previous checkpoint {candidate} (step {state['step']})",
                  file=sys.stderr)
        return state
    return None


# ---------------------------------------------------------------------------- progress
class Progress:
    """Step, loss, tokens/s and ETA on stderr: a rich bar on a terminal, throttled lines otherwise."""

    def __init__(self, enabled: bool, total_steps: int, label: str) -> None:
        self.enabled, self.total, self.label = enabled, total_steps, label
        self._bar = None
        self._last_line = 0.0
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), console=Console(stderr=True),
                                     transient=False)
            self._task = self._bar.add_task(label, total=total_steps, info="")
            self._bar.start()

    def update(self, step: int, loss: float, tokens_per_s: float, eta_s: float,
               val_loss: float | None = None) -> None:
        if not self.enabled:
            return
        info = (f"loss {loss:.4f}" + (f"  val {val_loss:.4f}" if val_loss is not None else "")
                + f"  {tokens_per_s:,.0f} tok/s  ETA {_fmt_s(eta_s)}")
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
            return
        now = time.monotonic()
        if now - self._last_line >= PLAIN_PROGRESS_EVERY_S or step == self.total:
            self._last_line = now
            print(f"{self.label} step {step}/{self.total}  {info}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _fmt_s(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# ---------------------------------------------------------------------------- the run
REUSE_ENV = "CP_PLAN_REUSE_CHECKPOINTS"


def reuse_checkpoints() -> bool:
    """Whether a checkpoint written for another run of the same config may stand in for this
    run's progress (``CP_PLAN_REUSE_CHECKPOINTS=1``); by default a run resumes only its own."""
    return os.environ.get(REUSE_ENV, "").strip() in ("1", "true", "yes")


def train_run(cfg: TrainConfig, db=None, progress: bool = True, resume: bool = False,
              sweep: str = "single", sweep_id: str | None = None, run_id: str | None = None) -> dict:
    """Train one run of ``cfg`` and record it in ``db`` (a RunDB, or None to record nothing).

    ``resume=True`` continues from this config's checkpoint when there is one (and reuses its
    database row, or an unfinished row of the same config left by a killed process).
    ``run_id`` names the row to write (a sweep worker's claimed run) instead.
    Returns the run record: the run columns plus run_id, status, reason, loss (final validation
    loss), train_loss, tokens_per_s, wall_s, config_hash and config.

    Under ``torchrun`` the run is data-parallel over the ranks (:mod:`trainer.distributed`);
    rank 0 alone writes the database and checkpoints, and shows progress.
    """
    ddp, device = distributed.setup(resolve_device(cfg.device), cfg.batch_size)
    try:
        return _train_run(cfg, db if ddp.is_main else None, progress and ddp.is_main, resume, sweep,
                          sweep_id, run_id, device, ddp)
    finally:
        distributed.teardown(ddp)


def _train_run(cfg: TrainConfig, db, progress: bool, resume: bool, sweep: str, sweep_id: str | None,
               run_id: str | None, device: torch.device, ddp: distributed.DistInfo) -> dict:
    corpus = load_corpus(cfg.corpus, cfg.tokenizer)
    if corpus.sha256 != cfg.corpus_sha256:  # never train a config on another build of its text
        raise CpPlanError(f"this run's config trains on corpus {cfg.corpus!r} with sha256 "
                          f"{str(cfg.corpus_sha256)[:12]}…, but the corpus found has {str(corpus.sha256)[:12]}… "
                          "(rebuilt with other package versions?); restore that build "
                          "($CP_PLAN_CORPUS_DIR) or train into a new --db so runs on different text do not mix")
    fields = run_fields(cfg, corpus, device, sweep, sweep_id)
    if ddp.enabled:
        fields["device"] += f" × {ddp.world_size} ranks (DDP)"
    ckpt_path = cfg.checkpoint_path() / CHECKPOINT_NAME
    state = load_checkpoint(ckpt_path, cfg) if resume else None

    record = dict(run_id=None, status="running", reason=None, step=0, **fields, loss=None, train_loss=None,
                  tokens_per_s=None, wall_s=None, config_hash=cfg.config_hash(), config=cfg.to_dict())
    done_id = db.find_done(cfg.config_hash()) if (resume and db is not None and run_id is None) else None
    if done_id is not None:  # nothing left to resume: report the finished run
        row = db.get_run(done_id)
        record.update({k: row[k] for k in record if k in row and k != "config"})
        return record
    record["run_id"] = _open_run(db, cfg, fields, state, resume, run_id)
    reused = None
    if state is not None and db is not None and not ddp.enabled and state.get("run_id") != record["run_id"]:
        # a checkpoint of the same config written for another run (another database, or a run
        # since re-opened): never taken as this run's progress unless asked for, then recorded.
        # (Under DDP only rank 0 knows the row, so every rank resumes alike, as before.)
        if reuse_checkpoints():
            reused = f"reused the checkpoint of run {state.get('run_id')} at step {state['step']} ({REUSE_ENV}=1)"
        else:
            print(f"cp-plan: not resuming from {ckpt_path}: it was written for run {state.get('run_id')}, not "
                  f"{record['run_id']}; training from step 0 (set {REUSE_ENV}=1 to reuse it)", file=sys.stderr)
            state = None

    reporter = Progress(progress, cfg.steps, f"{cfg.parameterization} N={cfg.n_embd} L={cfg.n_layer}")
    try:
        outcome = _train(cfg, corpus, device, state, ckpt_path, record["run_id"], db, reporter, ddp)
    except KeyboardInterrupt:
        reporter.close()
        record.update(status="failed", reason="interrupted (KeyboardInterrupt)")
        _finish(db, record)
        raise
    except Exception as exc:
        outcome = dict(status="failed", reason=f"{type(exc).__name__}: {exc}")
    finally:
        reporter.close()
    record.update(outcome)
    if reused is not None and not record.get("reason"):
        record["reason"] = reused  # kept on the finished row: this run did not train every step itself
    _finish(db, record)
    return record


def _open_run(db, cfg: TrainConfig, fields: dict, state: dict | None, resume: bool,
              run_id: str | None = None) -> str | None:
    """The run_id to write to: the given one, the checkpoint's row, an unfinished row of this
    config (resume only), or a new row."""
    if db is None:
        return None
    if run_id is not None:
        db.update_run(run_id, status="running", reason=None, worker=_worker_id(), **fields)
        return run_id
    if resume:
        candidates = []
        if state is not None and state.get("run_id"):
            candidates.append(state["run_id"])
        with contextlib.suppress(Exception):
            rows = db.runs(where={"config_hash": cfg.config_hash()}, statuses=("running", "failed"))
            if len(rows):
                candidates.extend(rows.sort_values("created_at", ascending=False)["run_id"].tolist())
        for run_id in candidates:
            try:
                row = db.get_run(run_id)
            except Exception:
                continue
            if (row.get("config_hash") == cfg.config_hash() and row.get("status") in ("running", "failed")
                    and not (row.get("status") == "running" and _worker_alive(row.get("worker")))):
                db.update_run(run_id, status="running", reason=None, worker=_worker_id(), **fields)
                return run_id
    # A fresh run: rows of this config left 'running' by a killed process are marked failed.
    with contextlib.suppress(Exception):
        db.fail_stale_runs(cfg.config_hash())
    return db.start_run(cfg.to_dict(), cfg.config_hash(), worker=_worker_id(), **fields)


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _worker_alive(worker: str | None) -> bool:
    """Whether the process that wrote a 'running' row may still be training it (unknown → yes)."""
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _finish(db, record: dict) -> None:
    """Write the outcome; a database error here is reported, not raised (the record survives)."""
    if db is None or record["run_id"] is None:
        return
    try:
        db.finish_run(record["run_id"], record["status"], reason=record["reason"], loss=record["loss"],
                      train_loss=record["train_loss"], tokens_per_s=record["tokens_per_s"],
                      wall_s=record["wall_s"], step=record.get("step"))
    except Exception as exc:
        record["db_error"] = f"{type(exc).__name__}: {exc}"
        print(f"cp-plan: could not record run {record['run_id']}: {exc}", file=sys.stderr)


def _train(cfg: TrainConfig, corpus: Corpus, device: torch.device, state: dict | None,
           ckpt_path: Path, run_id: str | None, db, reporter: Progress,
           ddp: distributed.DistInfo = distributed.DistInfo()) -> dict:
    """The training loop; returns the outcome fields (status, reason, losses, speed, time)."""
    t_start = time.monotonic()
    torch.manual_seed(cfg.seed)
    model = GPT.from_config(cfg).to(device)
    optimizer = build_optimizer(model, cfg.rules(), (cfg.beta1, cfg.beta2), device.type)
    forward = distributed.wrap(model, ddp, device)  # DDP when under torchrun
    forward = torch.compile(forward) if cfg.compile else forward
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.dtype == "bfloat16"
                else contextlib.nullcontext())
    batches = Batches(corpus, cfg.batch_size, cfg.seq_len, cfg.seed, device)
    val_batches = batches.val_batches(cfg.eval_batches)
    total, warmup = cfg.steps, cfg.warmup_steps
    blowup_limit = math.log(cfg.vocab_size) + BLOWUP_NATS

    # Everything a resumed run needs to continue exactly where it stopped.
    step, curve, window, window_norms, initial_loss = 0, {}, [], [], None
    blowup_steps = 0
    prior_wall_s, prior_train_s, prior_tokens = 0.0, 0.0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        if state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        step, curve = state["step"], state["curve"]
        window, window_norms = state["window"], state["window_norms"]
        initial_loss = state["initial_loss"]
        prior_wall_s, prior_train_s, prior_tokens = state["wall_s"], state["train_s"], state["tokens_trained"]

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        losses = []
        for x, y in val_batches:
            with autocast:
                losses.append(forward(distributed.shard(x, ddp), distributed.shard(y, ddp))[1].float())
        model.train()
        return distributed.mean(torch.stack(losses).mean(), ddp)

    def lr_at(s: int) -> float:
        return cfg.lr * lr_multiplier(min(s, total - 1), total, warmup, cfg.schedule)

    def checkpoint() -> None:
        if not ddp.is_main:
            return
        # The last one keeps the weights but not the optimizer state (2× the weights): a finished
        # run resumes to its result without it, and sweeps of many runs stay small on disk.
        save_checkpoint(ckpt_path, dict(
            config_hash=cfg.config_hash(), config=cfg.to_dict(), run_id=run_id,
            model=model.state_dict(), optimizer=optimizer.state_dict() if step < total else None,
            step=step, data_position=step,  # batch t is a function of (seed, t): the step is the position
            rng=dict(torch=torch.get_rng_state(),
                     cuda=torch.cuda.get_rng_state(device) if device.type == "cuda" else None),
            curve=curve, window=window, window_norms=window_norms, initial_loss=initial_loss,
            wall_s=prior_wall_s + time.monotonic() - t_start, train_s=prior_train_s + train_s,
            tokens_trained=prior_tokens + tokens,
        ))

    def outcome(status: str, reason: str | None = None) -> dict:
        if db is not None and run_id is not None:  # the curve so far, diverged runs included
            db.add_curve(run_id, [curve[s] for s in sorted(curve)])
        train_s_all = prior_train_s + train_s
        last = [r["train_loss"] for r in curve.values() if r["train_loss"] is not None]
        return dict(status=status, reason=reason, step=step,
                    loss=curve[step]["val_loss"] if step in curve and status == "done" else None,
                    train_loss=last[-1] if last else None,
                    tokens_per_s=(prior_tokens + tokens) / train_s_all if train_s_all > 0 else None,
                    wall_s=prior_wall_s + time.monotonic() - t_start)

    train_s, tokens, first_step = 0.0, 0, step
    last_db_update = t_loop = time.monotonic()
    if step == 0:
        curve[0] = dict(step=0, n_tokens=0, train_loss=None, val_loss=evaluate(), lr=lr_at(0),
                        wall_s=time.monotonic() - t_start)
    model.train()
    while step < total:
        t0 = time.perf_counter()
        set_lr(optimizer, lr_multiplier(step, total, warmup, cfg.schedule))
        x, y = (distributed.shard(t, ddp) for t in batches.train_batch(step))
        with autocast:
            _, loss = forward(x, y)
        loss.backward()
        if cfg.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = distributed.mean(loss, ddp)  # synchronizes the device too: the timing below is honest
        window_norms.append(grad_norm.item() if cfg.grad_clip > 0 else float("nan"))
        train_s += time.perf_counter() - t0
        tokens += cfg.tokens_per_step
        step += 1

        if initial_loss is None:
            initial_loss = loss_value
        if not math.isfinite(loss_value):
            return outcome("diverged", f"training loss {loss_value} at step {step}")
        # A blow-up must persist: early-warmup spikes above the limit often recover, and calling
        # them divergence would bias LR sweeps toward small LRs.
        blown = loss_value > blowup_limit and loss_value > initial_loss
        blowup_steps = blowup_steps + 1 if blown else 0
        if blowup_steps >= max(1, min(BLOWUP_PATIENCE, total - warmup)) or (blown and step == total):
            return outcome("diverged", f"training loss {loss_value:.3f} at step {step} stayed above "
                                       f"ln(vocab)+{BLOWUP_NATS:g}={blowup_limit:.3f} and the initial "
                                       f"{initial_loss:.3f} for {blowup_steps} steps")
        window.append(loss_value)
        val_loss = evaluate() if step % cfg.eval_every == 0 or step == total else None
        if val_loss is not None and not math.isfinite(val_loss):
            return outcome("diverged", f"validation loss {val_loss} at step {step}")
        if step % cfg.log_every == 0 or val_loss is not None:
            curve[step] = dict(step=step, n_tokens=step * cfg.tokens_per_step,
                               train_loss=sum(window) / len(window), val_loss=val_loss,
                               lr=lr_at(step - 1), grad_norm=max(window_norms),
                               tokens_per_s=tokens / train_s,
                               wall_s=prior_wall_s + time.monotonic() - t_start)
            window, window_norms = [], []
        if cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == total):
            checkpoint()
        now = time.monotonic()
        eta_s = (now - t_loop) / (step - first_step) * (total - step)  # includes evaluation time
        reporter.update(step, loss_value, tokens / train_s, eta_s, val_loss)
        if db is not None and run_id is not None and now - last_db_update >= DB_PROGRESS_EVERY_S:
            db.update_run(run_id, step=step)  # lets a sweep's parent poll progress
            last_db_update = now
    return outcome("done")
