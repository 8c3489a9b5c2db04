"""Sweep workers: claim runs from the run database, train them under a lease, and launch workers
as local processes or Slurm jobs (through submitit).

The queue is the run database itself (:meth:`planner.db.RunDB.enqueue` / ``claim``), so a sweep
needs no scheduler of its own and survives its workers: a worker claims a pending run in one
transaction, trains it while a heartbeat thread renews its lease, and writes the run only while it
holds the lease (fenced writes: :class:`planner.db.LeaseLost`). A worker that dies (SIGKILL, node
failure, Slurm pre-emption) stops renewing; once its lease expires, or at once when it was a
process on the same host, another worker claims the run and resumes it from its checkpoint. A
run is claimed at most ``max_attempts`` times per sweep (default 2: one retry).

Checkpoints live under each config's ``checkpoint_dir``: workers on several machines need it on a
shared filesystem to resume each other's runs (otherwise a re-claimed run restarts from step 0).
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from planner.db import DEFAULT_LEASE_S, DEFAULT_MAX_ATTEMPTS, LeaseLost, RunDB, local_worker_id
from planner.errors import CpPlanError

LAUNCHERS = ("local", "slurm")
OPEN_STATES = ("pending", "running")


def poll_interval(lease_s: float) -> float:
    """How often an idle worker (or a sweep's parent) looks at the queue: a tenth of the lease,
    between 0.2 s and 10 s."""
    return min(10.0, max(0.2, lease_s / 10.0))


class Heartbeat:
    """A daemon thread renewing a claimed run's lease every lease/4 seconds (independent of how
    long a training step takes). ``lost`` turns True once the worker no longer holds the run."""

    def __init__(self, db: RunDB, run_id: str, worker: str, lease_s: float) -> None:
        self.db, self.run_id, self.worker, self.lease_s = db, run_id, worker, lease_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{run_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4.0):
            try:
                if not self.db.renew(self.run_id, self.worker, self.lease_s):
                    self.lost = True
                    return
            except CpPlanError as exc:  # database briefly unreachable: keep trying until the lease runs out
                print(f"cp-plan: worker {self.worker}: could not renew the lease of run {self.run_id}: {exc}",
                      file=sys.stderr, flush=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class FencedDB:
    """The run database as the trainer of one claimed run sees it: every write to that run
    carries the worker's lease (progress writes also extend it) and fails with LeaseLost once
    another worker has taken the run, which ends the training as 'failed' without touching the
    other worker's row. Reads and writes to other runs go straight to the database."""

    def __init__(self, db: RunDB, run_id: str, worker: str, lease_s: float, heartbeat: Heartbeat | None = None):
        self._db, self._run_id, self._worker, self._lease_s, self._hb = db, run_id, worker, lease_s, heartbeat

    def __getattr__(self, name):
        return getattr(self._db, name)

    def _check(self) -> None:
        if self._hb is not None and self._hb.lost:
            raise LeaseLost(f"worker {self._worker} lost its lease on run {self._run_id}; another worker has it")

    def update_run(self, run_id: str, **fields) -> None:
        if run_id != self._run_id:
            return self._db.update_run(run_id, **fields)
        self._check()
        if fields.get("status", "running") == "running":
            from planner.db import iso_in  # the lease moves with every progress write

            fields.setdefault("lease_expires_at", iso_in(self._lease_s))
        self._db.update_run(run_id, lease_holder=self._worker, **fields)

    def finish_run(self, run_id: str, status: str, **fields) -> None:
        if run_id != self._run_id:
            return self._db.finish_run(run_id, status, **fields)
        self._check()
        self._db.finish_run(run_id, status, lease_holder=self._worker, **fields)

    def add_curve(self, run_id: str, rows: list[dict]) -> None:
        if run_id != self._run_id:
            return self._db.add_curve(run_id, rows)
        self._check()
        self._db.add_curve(run_id, rows, lease_holder=self._worker)


def train_claimed(db: RunDB, run: dict, worker: str, lease_s: float, progress: bool = False) -> dict:
    """Train one claimed run (``claim``'s dict) under its lease; returns train_run's record."""
    from trainer.config import TrainConfig
    from trainer.train import train_run

    run_id = run["run_id"]
    try:
        cfg = TrainConfig.from_dict(run["config"] or {})
        if cfg.config_hash() != run["config_hash"]:
            raise CpPlanError(f"its config hashes to {cfg.config_hash()[:12]}, not the queued "
                              f"{run['config_hash'][:12]} (was it queued by another cp-plan version?)")
    except CpPlanError as exc:
        reason = f"cannot train the queued config: {exc}"
        db.finish_run(run_id, "failed", reason=reason, lease_holder=worker)
        return {"run_id": run_id, "status": "failed", "reason": reason, "loss": None}
    with Heartbeat(db, run_id, worker, lease_s) as hb:
        try:
            return train_run(cfg, FencedDB(db, run_id, worker, lease_s, hb), progress=progress, resume=True,
                             sweep=run.get("sweep") or "single", sweep_id=run.get("sweep_id"), run_id=run_id)
        except CpPlanError as exc:  # refused before training (corpus missing, no such device, ...)
            reason = str(exc)
            try:
                db.finish_run(run_id, "failed", reason=reason, lease_holder=worker)
            except LeaseLost:
                pass
            return {"run_id": run_id, "status": "failed", "reason": reason, "loss": None}


def worker_loop(db: RunDB, *, config_hashes=None, sweep_id: str | None = None,
                lease_s: float = DEFAULT_LEASE_S, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                progress: bool = False, on_record: Callable[[dict, dict], None] | None = None,
                worker: str | None = None) -> list[dict]:
    """Claim and train runs of one sweep until none is pending or running.

    While another worker trains the last runs this one waits (polling), so that it can take
    over a run whose worker dies. Returns the records of the runs it trained.
    """
    worker = worker or local_worker_id()
    scope = dict(config_hashes=config_hashes, sweep_id=sweep_id)
    records = []
    while True:
        run = db.claim(worker, lease_s, max_attempts=max_attempts, **scope)
        if run is None:
            status = db.queue_status(max_attempts=max_attempts, **scope)
            if not any(v["state"] in OPEN_STATES for v in status.values()):
                return records
            time.sleep(poll_interval(lease_s))
            continue
        record = train_claimed(db, run, worker, lease_s, progress)
        records.append(record)
        if on_record is not None:
            on_record(run, record)


class WorkerStopped(KeyboardInterrupt):
    """Raised in a local worker's main thread when its parent sweep is gone or asked it to stop
    (SIGTERM): the trainer records its run as interrupted, resumable from its checkpoint, like
    Ctrl-C."""


def _raise_stop(signum, frame) -> None:
    raise WorkerStopped(f"signal {signum}: the sweep stopped")


def _set_parent_death_signal(sig: int) -> None:
    """Linux: have the kernel send ``sig`` to this process when its parent dies (also SIGKILL);
    elsewhere a no-op (the watchdog thread covers it)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def bind_to_parent(parent_pid: int, grace_s: float = 20.0) -> None:
    """Make this local worker process end with the sweep that started it.

    SIGTERM (the parent's ``terminate``, or the kernel's parent-death signal) raises
    :class:`WorkerStopped` in the main thread, so the current run is recorded as interrupted and
    no new run is claimed. A watchdog thread also polls for the parent every 0.5 s (a parent that
    died before the death signal was armed, or a platform without one); a worker still alive
    ``grace_s`` seconds after its parent is gone exits hard (its run stays resumable: the lease
    expires or, on this host, the dead process is seen at once)."""
    import signal

    signal.signal(signal.SIGTERM, _raise_stop)
    _set_parent_death_signal(signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(143)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _worker_process(db_url: str, config_hashes: list[str], lease_s: float, max_attempts: int,
                    threads: int | None, secret_file: str | None = None, parent_pid: int | None = None) -> int:
    """Entry point of a worker process or Slurm job (top level so that it pickles).
    ``secret_file`` holds the database password when the URL was sent without it; ``parent_pid``
    (local workers) binds the worker's life to its sweep's (:func:`bind_to_parent`)."""
    if parent_pid is not None:
        bind_to_parent(parent_pid)
    if secret_file is not None:
        db_url = _url_with_secret(db_url, secret_file)
    threads = threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0) or None  # the job's CPUs, not the node's
    if threads:
        import torch

        torch.set_num_threads(threads)
    db = RunDB(db_url)
    try:
        return len(worker_loop(db, config_hashes=config_hashes, lease_s=lease_s, max_attempts=max_attempts))
    except KeyboardInterrupt:  # WorkerStopped, or Ctrl-C reaching the whole process group
        return 0
    finally:
        db.close()


# ---------------------------------------------------------------------------- launchers


def run_local_workers(db: RunDB, config_hashes: list[str], workers: int, *, lease_s: float,
                      max_attempts: int, on_poll: Callable[[dict], None], log: Callable[[str], None]) -> None:
    """Run ``workers`` worker processes (spawned, cores/workers threads each) until the sweep
    has no pending or running config; a worker that dies is replaced while work remains (at most
    ``workers`` replacements), and its run is re-claimed by the others."""
    import multiprocessing as mp

    url = db.worker_url()
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    args = (url, list(config_hashes), lease_s, max_attempts, threads, None, os.getpid())

    def start():
        p = ctx.Process(target=_worker_process, args=args, daemon=False)
        p.start()
        return p

    import signal

    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM ends the sweep like Ctrl-C: the finally below stops the workers
        previous = signal.signal(signal.SIGTERM, _raise_stop)
    procs = [start() for _ in range(workers)]
    replaced, replacements = set(), 0
    try:
        while True:
            status = db.queue_status(config_hashes=config_hashes, max_attempts=max_attempts)
            on_poll(status)
            open_work = any(v["state"] in OPEN_STATES for v in status.values())
            for p in list(procs):
                if not p.is_alive() and p.pid not in replaced:  # is_alive() also reaps the process
                    replaced.add(p.pid)
                    if p.exitcode != 0:
                        log(f"worker process {p.pid} died (exit code {p.exitcode}); its run will be re-claimed")
                        if open_work and replacements < workers:
                            replacements += 1
                            procs.append(start())
            if not any(p.is_alive() for p in procs):
                if open_work and replacements < workers:
                    replacements += 1
                    procs.append(start())
                    continue
                break
            time.sleep(min(1.0, poll_interval(lease_s)))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    on_poll(db.queue_status(config_hashes=config_hashes, max_attempts=max_attempts))


def parse_time_min(text: str | int | float) -> int:
    """Slurm time limit as minutes: '90', '4:00:00' (H:MM:SS), '1-12:00:00' (D-HH:MM:SS) or '30:00' (MM:SS)."""
    s = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", s)
    if not m:
        raise CpPlanError(f"--time {text!r} is not a Slurm time; use minutes (90), H:MM:SS (4:00:00) or D-HH:MM:SS")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if c is not None:  # [D-]H:MM:SS
        minutes = (days or 0) * 1440 + a * 60 + b + (1 if c else 0)
    elif b is not None:  # [D-]H:MM with a day, else MM:SS
        minutes = (days * 1440 + a * 60 + b) if days is not None else a + (1 if b else 0)
    else:
        minutes = (days or 0) * 1440 + (a * 60 if days is not None else a)
    if minutes < 1:
        raise CpPlanError(f"--time {text!r} is shorter than a minute; give the wall time a worker job may use")
    return minutes


def slurm_executor(folder: str | Path, *, partition: str | None, time_min: int, gpus_per_node: int,
                   cpus_per_task: int | None = None, job_name: str = "cp-plan-sweep"):
    """A submitit executor for Slurm worker jobs (one worker per array task)."""
    try:
        import submitit
    except ImportError:
        raise CpPlanError("--launcher slurm needs submitit: pip install 'cp-plan[cluster]'") from None
    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    except RuntimeError as exc:
        raise CpPlanError(f"Slurm is not available on this machine ({exc}); run the sweep from a Slurm login "
                          "node, or use --launcher local") from None
    params = dict(timeout_min=time_min, gpus_per_node=gpus_per_node, name=job_name)
    if partition:
        params["slurm_partition"] = partition
    if cpus_per_task:
        params["cpus_per_task"] = cpus_per_task
    executor.update_parameters(**params)
    return executor


def split_secret(db: RunDB, folder: str | Path) -> tuple[str, str | None]:
    """The database URL for worker jobs without its password, and the path of a file that
    holds the password (mode 0600, in ``folder``), or None when the URL has none.

    submitit pickles a job's arguments into files in its folder, which other users of a shared
    filesystem may read; a password in ``user:PW@`` or ``?password=PW`` must not go there."""
    url = db.url
    if db.path is not None or db.backend == "sqlite":
        return db.worker_url(), None
    query_keys = [k for k in url.query if k.lower() == "password"]
    password = url.password
    if password is None and query_keys:
        v = url.query[query_keys[0]]
        password = v[0] if isinstance(v, tuple) else v
    if password is None:
        return db.worker_url(), None
    url = url.difference_update_query(query_keys)
    bare = type(url).create(url.drivername, username=url.username, password=None, host=url.host,
                            port=url.port, database=url.database, query=url.query)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".cp-plan-db-secret-{uuid.uuid4().hex[:12]}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(str(password))
    return bare.render_as_string(hide_password=False), str(path)


def _url_with_secret(db_url: str, secret_file: str) -> str:
    import sqlalchemy as sa

    try:
        password = Path(secret_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise CpPlanError(f"worker: cannot read the database password file {secret_file} ({exc.strerror}); "
                          "it must be on a filesystem the worker nodes share") from None
    return sa.make_url(db_url).set(password=password).render_as_string(hide_password=False)


def submit_workers(executor, db: RunDB, config_hashes: list[str], workers: int, *, lease_s: float,
                   max_attempts: int) -> list:
    """Submit ``workers`` worker jobs (a Slurm job array with a Slurm executor) and return them.
    The jobs get the database URL without its password; the password goes in a 0600 file in
    the executor's folder (:func:`split_secret`)."""
    if workers > 1:
        try:
            executor.update_parameters(slurm_array_parallelism=workers)
        except (ValueError, TypeError):
            pass  # not a Slurm executor (submitit's local executor, in tests)
    folder = getattr(executor, "folder", None) or getattr(getattr(executor, "_executor", None), "folder", None)
    url, secret = split_secret(db, folder or Path.cwd())
    hashes = list(config_hashes)
    return executor.map_array(_worker_process, [url] * workers, [hashes] * workers,
                              [lease_s] * workers, [max_attempts] * workers, [None] * workers,
                              [secret] * workers)


def wait_jobs(jobs: list, db: RunDB, config_hashes: list[str], *, lease_s: float, max_attempts: int,
              on_poll: Callable[[dict], None], log: Callable[[str], None]) -> None:
    """Wait for submitted worker jobs, reporting runs as they finish; a failed job is logged (its
    run is re-claimed by the other workers once its lease expires)."""
    reported: set[int] = set()
    while True:
        on_poll(db.queue_status(config_hashes=config_hashes, max_attempts=max_attempts))
        for i, job in enumerate(jobs):
            if i not in reported and job.done():
                reported.add(i)
                exc = job.exception()
                if exc is not None:
                    first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                    log(f"worker job {job.job_id} failed: {first}")
        if len(reported) == len(jobs):
            break
        time.sleep(min(5.0, poll_interval(lease_s)))
    on_poll(db.queue_status(config_hashes=config_hashes, max_attempts=max_attempts))


def check_lease(lease_s: float) -> float:
    if not (isinstance(lease_s, (int, float)) and math.isfinite(lease_s) and lease_s > 0):
        raise CpPlanError(f"--lease-s {lease_s!r} must be a positive number of seconds, e.g. 300")
    return float(lease_s)
