"""`cp-plan reproduce` and its data: the english corpus (fixture only, never the real 117 MB), the `cpu` scale's plan
(acceptance and budget), bracketing, cpu-kjv reproducing the shipped database, `reproduce --scale
tiny` end to end, and `runs list --json` carrying seed and seq_len."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from planner.errors import CpPlanError
from trainer import corpus as english
from trainer.config import TrainConfig
from trainer.reproduce import (SCALES, dry_run, estimate_seconds, extension_shapes, open_sides, planned_runs,
                               seeds_at, shape_ladder, sweep_shapes)

from conftest import run_cli_process

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "data" / "corpus"
SHIPPED = ROOT / "data" / "runs" / "runs.sqlite"


@pytest.fixture
def fixture_corpus(monkeypatch):
    monkeypatch.setenv("CP_PLAN_CORPUS_DIR", str(FIXTURE))
    return FIXTURE


def _cli(*args, env=None):
    proc = run_cli_process(*args, env=env, timeout=900)
    return proc.returncode, proc.stdout, proc.stderr


# ---------------------------------------------------------------------------- corpus
def test_english_split_is_by_document_disjoint_and_deterministic(fixture_corpus):
    from trainer.data import load_corpus

    train, val, sha = english.english_documents()
    assert len(train) == 16 and len(val) == 2  # the fixture holds 9 + 9 documents, 1 + 1 validation
    assert not set(train) & set(val)
    assert all(hashlib.sha256(d).digest()[0] < english.VAL_HASH_BELOW for d in val)
    c = load_corpus("english")
    assert c.name == "english" and c.sha256 == sha and c.n_docs_val == 2
    assert bytes(c.val.numpy()) == english.join_documents(val)  # bytes are the byte tokenizer's ids
    assert c.n_train_tokens + c.val.numel() == sum(f.stat().st_size for f in FIXTURE.glob("*.txt"))


def test_config_records_the_corpus_sha_and_old_hashes_stay(fixture_corpus):
    manifest = english.read_manifest()
    cfg = TrainConfig(corpus="english")
    assert cfg.corpus_sha256 == english.corpus_sha256(manifest) and len(cfg.corpus_sha256) == 64
    other = cfg.replace(corpus_sha256="0" * 64)
    assert other.config_hash() != cfg.config_hash()  # another build of the text is another run
    kjv = TrainConfig()
    assert kjv.corpus_sha256 is None and "corpus_sha256" not in kjv.science_dict()
    with pytest.raises(CpPlanError, match="recorded only for corpus 'english'"):
        TrainConfig(corpus_sha256="0" * 64)


def test_missing_or_edited_corpus_is_one_line_naming_the_build_command(tmp_path, monkeypatch):
    code, _, err = _cli("train", "--corpus", "english", "--n-tokens", "1e3", "--db", tmp_path / "x.sqlite",
                        env={"CP_PLAN_CORPUS_DIR": str(tmp_path / "none")})
    assert code == 1 and err.count("\n") == 1 and "cp-plan corpus build" in err and "not built" in err
    bad = tmp_path / "corpus"
    shutil.copytree(FIXTURE, bad)
    (bad / "technical.txt").write_bytes((bad / "technical.txt").read_bytes().replace(b"Section", b"Sektion", 1))
    with pytest.raises(CpPlanError, match="does not match its sha256.*cp-plan corpus build"):
        english.english_documents(bad)


def test_training_refuses_another_build_of_the_text(fixture_corpus):
    from trainer.train import train_run

    cfg = TrainConfig(corpus="english", corpus_sha256="f" * 64, n_embd=16, n_layer=1, d_head=8,
                      base_n_embd=16, seq_len=16, batch_size=2, n_tokens=64, device="cpu")
    with pytest.raises(CpPlanError, match="different text do not mix"):
        train_run(cfg, None, progress=False)


# ---------------------------------------------------------------------------- the cpu scale
def test_cpu_scale_meets_the_issue_where_the_budget_allows(fixture_corpus):
    scale = SCALES["cpu"]
    assert scale.seq_len >= 128 and scale.corpus == "english"
    shapes = {p: sweep_shapes(scale, p) for p in scale.params}
    for p, v in shapes.items():
        assert len({(s.n_embd, s.n_layer) for s in v}) >= 7, p
        assert all(p / 1.27 <= s.n_params <= p * 1.27 for s in v)
    assert max(scale.params) / min(scale.params) >= 16 and max(scale.params) >= 4e5
    assert sum(s.n_params for s in shapes[4e5]) / 7 >= 3.9e5
    top_two = sorted(scale.params)[-2:]
    assert seeds_at(scale, top_two[0]) == (0, 1, 2) and seeds_at(scale, top_two[1]) == (0, 1)
    plan = planned_runs(scale, {"completep": 1e-2, "sp": 2e-2})
    seeds = [r.config for r in plan["base-lr-sp"] if r.config.lr == 2e-2]
    assert sorted(c.seed for c in seeds) == [0, 1, 2] and {c.parameterization for c in seeds} == {"sp"}
    sp_runs = [r.config for r in plan["shape-P4e+05"] if r.config.parameterization == "sp"]
    assert {c.lr for c in sp_runs} == {2e-2}  # SP keeps its own η_base; μP/CompleteP get theirs
    hours = sum(estimate_seconds(r.config) for runs in plan.values() for r in runs) / 3600
    assert 6.5 < hours < 8.0, hours  # CPU_COMMENT's budget: planned runs fit 8 CPU-hours


def test_estimate_matches_the_measured_throughput():
    # tokens/s per thread measured at P ≈ 4e5, seq_len 128 (CPU_COMMENT)
    for (n, l, tps) in ((184, 1, 27226), (64, 8, 15030), (40, 20, 10116)):
        cfg = TrainConfig(n_embd=n, n_layer=l, d_head=8, base_n_embd=64, seq_len=128, batch_size=32, n_tokens=4096 * 100)
        assert estimate_seconds(cfg) / 1.06 == pytest.approx(4096 * 100 / tps, rel=0.08)


def test_bracketing_finds_open_sides_and_extends_along_the_ladder():
    losses = {(32, 8): 2.0, (40, 5): 1.9, (48, 3): 1.8, (64, 2): 1.85, (96, 1): 1.95}
    assert open_sides(losses) == {}
    assert open_sides({**losses, (96, 1): 1.7}) == {"wide": 2}
    assert open_sides({(32, 8): 1.0, (40, 5): 1.9, (64, 2): 2.0}) == {"deep": 2}
    ladder = shape_ladder(1e5, 8, 1.27)
    shapes = sweep_shapes(SCALES["cpu"], 1e5)
    deep = extension_shapes(ladder, shapes, "deep", 2, 2.0, 1e5)
    assert len(deep) == 2 and max(s.ratio for s in deep) < min(s.ratio for s in shapes)
    assert extension_shapes(ladder, shapes, "wide", 2, 2.0, 1e5) == []  # L = 1 is the widest there is


def test_cpu_kjv_plans_exactly_the_shipped_database():
    from planner.db import RunDB

    db = RunDB(SHIPPED, create=False)
    plan = dry_run(SCALES["cpu-kjv"], db)
    assert plan["total"]["runs"] >= 100 and plan["total"]["done"] == plan["total"]["runs"]


# ---------------------------------------------------------------------------- end to end
@pytest.mark.slow  # trains 30-odd tiny runs from scratch: 2-5 minutes on 2 cores
def test_reproduce_tiny_end_to_end(tmp_path):
    db = tmp_path / "tiny.sqlite"
    code, out, err = _cli("reproduce", "--scale", "tiny", "--workers", "1", "--db", db,
                          "--report-dir", tmp_path / "rep", "--json")
    assert code == 0, err[-2000:]
    summary = json.loads(out)
    assert set(summary["base_lrs"]) == {"completep", "sp"}
    assert len(summary["shape-P1.6e+04-shapes"]) >= 3 and (tmp_path / "rep" / "REPRODUCTION.md").is_file()
    code, out, _ = _cli("runs", "list", "--db", db, "--json", "--where", "sweep_id=shape-P1.6e+04")
    rows = json.loads(out)
    assert code == 0 and {r["seq_len"] for r in rows} == {32} and {r["seed"] for r in rows} == {0, 1}
    code, out, _ = _cli("reproduce", "--scale", "tiny", "--db", db, "--dry-run", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["total"]["done"] == plan["total"]["runs"]  # a rerun has nothing left


def test_english_runs_do_not_join_a_kjv_database(tmp_path, fixture_corpus):
    import dataclasses

    from planner.db import RunDB
    from trainer.reproduce import run_reproduction

    shutil.copy(SHIPPED, tmp_path / "kjv.sqlite")
    db = RunDB(tmp_path / "kjv.sqlite")
    scale = dataclasses.replace(SCALES["tiny"], corpus="english")
    with pytest.raises(CpPlanError, match="holds runs on corpus 'kjv'.*own database"):
        run_reproduction(scale, db, log=lambda m: None)
