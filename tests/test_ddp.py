"""`cp-plan train` under torchrun (DDP, gloo on CPU): the same curve as one process with the same
global batch and seed, rank 0 alone writing, and a resume at another world size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from planner.db import RunDB  # noqa: E402
from planner.errors import CpPlanError  # noqa: E402
from trainer import distributed  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.train import CHECKPOINT_NAME, train_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRAIN = dict(parameterization="completep", n_embd=32, n_layer=2, d_head=16, base_n_embd=32, base_n_layer=1,
             lr=1e-2, seq_len=32, batch_size=8, n_tokens=40 * 256, eval_every=10, eval_batches=2, log_every=5,
             checkpoint_every=10, device="cpu")


def _args(cfg: dict) -> list[str]:
    flag = {"parameterization": "-p"}
    return [x for k, v in cfg.items() for x in (flag.get(k, "--" + k.replace("_", "-")), str(v))]


def test_two_process_run_matches_one_process_and_resumes_at_another_world_size(tmp_path):
    torch.set_num_threads(1)
    single_db = RunDB(tmp_path / "single.sqlite")
    single = train_run(TrainConfig(**TRAIN, checkpoint_dir=str(tmp_path / "single")), single_db, progress=False)
    assert single["status"] == "done"

    ddp_db = tmp_path / "ddp.sqlite"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "cli", "train", *_args({**TRAIN, "checkpoint_dir": tmp_path / "ddp"}),
           "--db", str(ddp_db), "--no-progress", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"run_id"') == 1  # rank 0 alone reports ...
    db = RunDB(ddp_db)
    runs = db.runs(statuses=None)
    assert len(runs) == 1 and runs["status"].iloc[0] == "done"  # ... and writes the database
    assert runs["device"].iloc[0].endswith("× 2 ranks (DDP)")

    a, b = single_db.curve(single["run_id"]), db.curve(runs["run_id"].iloc[0])
    assert list(a["step"]) == list(b["step"]) and len(a) == 9
    for col in ("train_loss", "val_loss"):
        x, y = a[col].dropna().to_numpy(), b[col].dropna().to_numpy()
        assert len(x) == len(y) > 0
        assert x == pytest.approx(y, rel=1e-5), col  # float rounding only: measured ~2e-7
    assert runs["loss"].iloc[0] == pytest.approx(single["loss"], rel=1e-5)

    # Resume at world size 1 from the checkpoint the 2-rank run wrote (its final one is cut short,
    # so the step-30 one is used): the run ends where the 2-rank run ended.
    cfg = TrainConfig(**TRAIN, checkpoint_dir=str(tmp_path / "ddp"))
    ckpt = cfg.checkpoint_path() / CHECKPOINT_NAME
    assert torch.load(ckpt, weights_only=False)["step"] == 40
    assert not list(ckpt.parent.glob(".*.tmp"))
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    resumed = train_run(cfg, None, progress=False, resume=True)
    assert resumed["status"] == "done"
    assert resumed["loss"] == pytest.approx(runs["loss"].iloc[0], rel=1e-5)


def test_global_batch_must_split_over_the_ranks(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(CpPlanError, match="batch_size=8 does not split over 3 processes; use a multiple of 3"):
        distributed.setup(torch.device("cpu"), 8)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(CpPlanError, match=r"\$WORLD_SIZE='two' is not an integer"):
        distributed.setup(torch.device("cpu"), 8)
    monkeypatch.delenv("WORLD_SIZE")
    info, device = distributed.setup(torch.device("cpu"), 8)
    assert info == distributed.DistInfo() and not info.enabled and device.type == "cpu"
    x = torch.arange(8)
    assert distributed.shard(x, distributed.DistInfo(1, 2, 1)).tolist() == [4, 5, 6, 7]
