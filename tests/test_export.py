"""`cp-plan recommend --export FORMAT --out FILE`: each file parses in its target's own terms and
carries the plan's shape, LR and per-group values (checked against `recommend --json`)."""

from __future__ import annotations

import ast
import json
import math
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from planner.errors import CpPlanError
from planner.export import FORMATS, render, write_export

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["recommend", "--params", "1.5e9", "--hardware", "weight-streaming"]

# Names each target defines, read from its source at the version the README names. A typo in an
# exported name (or a name the target dropped) fails here instead of in someone's training job.
NANOGPT_MUP_GLOBALS = {  # EleutherAI/nanoGPT-mup, branch completep: train.py module-level settings
    "out_dir", "eval_interval", "log_interval", "eval_iters", "eval_only", "skip_val_loss",
    "always_save_checkpoint", "never_save_checkpoint", "init_from", "wandb_log", "wandb_project",
    "wandb_run_name", "csv_log", "dataset", "gradient_accumulation_steps", "batch_size", "block_size",
    "n_layer", "n_head", "n_embd", "dropout", "bias", "init_std", "learning_rate", "max_iters",
    "weight_decay", "beta1", "beta2", "grad_clip", "adam_eps", "decay_lr", "warmup_iters",
    "lr_decay_iters", "min_lr", "mup_enabled", "mup_disable_attention_scaling",
    "mup_disable_hidden_lr_scaling", "mup_width_multiplier", "mup_input_alpha", "mup_output_alpha",
    "mup_enable_coord_check_logging", "depth_alpha_enabled", "depth_multiplier", "depth_alpha_exp",
    "seed", "backend", "device", "dtype", "compile",
}
MEGATRON_FLAGS = {  # NVIDIA/Megatron-LM core_v0.13.0: megatron/training/arguments.py
    "--num-layers", "--hidden-size", "--ffn-hidden-size", "--num-attention-heads", "--kv-channels",
    "--seq-length", "--max-position-embeddings", "--position-embedding-type", "--normalization",
    "--untie-embeddings-and-output-weights", "--global-batch-size", "--train-samples",
    "--lr-decay-style", "--lr-warmup-samples", "--lr-decay-samples", "--min-lr", "--lr",
    "--decoupled-lr", "--decoupled-min-lr", "--weight-decay", "--adam-eps", "--init-method-std",
}
MEGATRON_SWITCHES = {"--untie-embeddings-and-output-weights"}  # store_true: no value
TORCHTITAN_KEYS = {  # pytorch/torchtitan v0.2.2: torchtitan/config/job_config.py (a subset per section)
    "job": {"config_file", "dump_folder", "description", "print_config", "save_config_file", "custom_config_module"},
    "model": {"name", "flavor", "hf_assets_path", "tokenizer_path", "converters", "print_after_conversion"},
    "optimizer": {"name", "lr", "beta1", "beta2", "eps", "weight_decay", "implementation", "early_step_in_backward"},
    "lr_scheduler": {"warmup_steps", "total_steps", "decay_ratio", "decay_type", "min_lr_factor"},
    "training": {"dataset", "dataset_path", "local_batch_size", "global_batch_size", "seq_len", "max_norm",
                 "steps", "enable_cpu_offload", "dtype", "mixed_precision_param", "mixed_precision_reduce",
                 "gc_freq", "gc_debug", "dataloader"},
}
TORCHTITAN_MODEL_ARGS = {"dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
                         "ffn_dim_multiplier", "norm_eps", "rope_theta", "max_seq_len", "depth_init"}


def _invoke(args):
    res = CliRunner().invoke(app, args)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def plan():
    return json.loads(_invoke(ARGS + ["--json"]).stdout)


@pytest.fixture(scope="module")
def exported(plan, tmp_path_factory):
    """Each format written by the real command into a scratch folder."""
    out = {}
    folder = tmp_path_factory.mktemp("export")
    for fmt in FORMATS:
        path = folder / f"plan.{fmt}"
        _invoke(ARGS + ["--export", fmt, "--out", str(path)])
        out[fmt] = path.read_text(encoding="utf-8")
        assert not list(folder.glob(".*.tmp")), "the temp file of the atomic write was left behind"
    return out


def _groups(text: str) -> dict:
    """The ``# cp-plan group:`` lines as {group: {field: value}}."""
    out = {}
    for m in re.finditer(r"^# cp-plan group: (\S+) (.*)$", text, re.M):
        fields = dict(kv.split("=", 1) for kv in m.group(2).split())
        out[m.group(1)] = {k: (None if v == "none" else v if k == "init" else float(v)) for k, v in fields.items()}
    return out


def _check_groups(text: str, plan: dict) -> None:
    groups = _groups(text)
    assert set(groups) == set(plan["hparams"]["groups"]) and groups
    for name, want in plan["hparams"]["groups"].items():
        for field in ("init", "init_std", "lr", "lr_mult", "weight_decay", "eps"):
            assert groups[name][field] == want[field], (name, field)  # exact: repr round-trips
    mult = re.search(r"^# cp-plan multipliers: (.*)$", text, re.M).group(1)
    mult = dict(kv.split("=", 1) for kv in mult.split())
    for field in ("residual_mult", "output_mult", "input_mult", "attn_scale"):
        assert float(mult[field]) == plan["hparams"][field]


def _cannot(text: str) -> list[str]:
    """The lines of the "cannot express" block."""
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if "cannot express" in l)
    block = []
    for line in lines[start + 1:]:
        if not line.startswith("#   "):
            break
        block.append(line[4:])
    return block


def test_plan_has_what_the_exports_need(plan):
    assert plan["parameterization"] == "completep" and plan["hparams"] is not None
    assert plan["hparams"]["depth_mult"] > 1 and plan["hparams"]["width_mult"] > 1


def test_nanogpt_mup_config_execs_to_the_plan(plan, exported):
    text = exported["nanogpt-mup"]
    cfg: dict = {}
    exec(compile(text, "plan.py", "exec"), cfg)  # what nanoGPT-mup's configurator.py does
    names = {k for k in cfg if not k.startswith("__")}
    assert names <= NANOGPT_MUP_GLOBALS, names - NANOGPT_MUP_GLOBALS
    hp = plan["hparams"]
    assert (cfg["n_embd"], cfg["n_layer"], cfg["n_head"]) == (plan["n_embd"], plan["n_layer"], plan["n_head"])
    assert cfg["block_size"] == plan["target"]["seq_len"]
    assert cfg["learning_rate"] == hp["base"]["lr"] and cfg["weight_decay"] == hp["base"]["weight_decay"]
    assert cfg["adam_eps"] == hp["base"]["eps"] and cfg["init_std"] == hp["base"]["init_std"]
    assert cfg["mup_enabled"] is True and cfg["depth_alpha_enabled"] is True
    assert cfg["mup_width_multiplier"] == hp["width_mult"] and cfg["depth_multiplier"] == hp["depth_mult"]
    assert cfg["depth_alpha_exp"] == hp["alpha"] == 1.0
    # nanoGPT-mup's own CompleteP rule gives the hidden weights the plan's LR and weight decay
    hidden = hp["groups"]["hidden_weight"]
    depth_lr = cfg["depth_multiplier"] ** (cfg["depth_alpha_exp"] - 1)
    assert math.isclose(cfg["learning_rate"] / cfg["mup_width_multiplier"] * depth_lr, hidden["lr"], rel_tol=1e-12)
    assert math.isclose(cfg["weight_decay"] * cfg["mup_width_multiplier"], hidden["weight_decay"], rel_tol=1e-12)
    tokens = cfg["max_iters"] * cfg["batch_size"] * cfg["gradient_accumulation_steps"] * cfg["block_size"]
    assert plan["n_tokens"] <= tokens < plan["n_tokens"] * 1.01
    _check_groups(text, plan)
    # Under CompleteP it differs from the plan only in ε (one global ε) and in tying the embeddings.
    cannot = _cannot(text)
    assert cannot and all(" eps: " in l or "ties them" in l for l in cannot), cannot
    assert any(l.startswith("embedding eps: plan 1e-08") for l in cannot)


def test_megatron_arguments_split_to_the_plan(plan, exported):
    text = exported["megatron"]
    argv = shlex.split(text, comments=True)
    flags: dict = {}
    i = 0
    while i < len(argv):
        flag = argv[i]
        assert flag.startswith("--") and flag in MEGATRON_FLAGS, flag
        if flag in MEGATRON_SWITCHES:
            flags[flag] = True
            i += 1
        else:
            flags[flag] = argv[i + 1]
            i += 2
    hp = plan["hparams"]
    assert int(flags["--hidden-size"]) == plan["n_embd"] and int(flags["--num-layers"]) == plan["n_layer"]
    assert int(flags["--num-attention-heads"]) == plan["n_head"] and int(flags["--kv-channels"]) == plan["d_head"]
    assert int(flags["--ffn-hidden-size"]) == 4 * plan["n_embd"]
    assert float(flags["--lr"]) == hp["groups"]["hidden_weight"]["lr"]
    assert float(flags["--decoupled-lr"]) == hp["groups"]["embedding"]["lr"] == hp["groups"]["unembedding"]["lr"]
    assert float(flags["--weight-decay"]) == hp["groups"]["hidden_weight"]["weight_decay"]
    assert float(flags["--adam-eps"]) == hp["groups"]["hidden_weight"]["eps"]
    assert float(flags["--init-method-std"]) == hp["groups"]["hidden_weight"]["init_std"]
    assert flags["--untie-embeddings-and-output-weights"] is True
    samples = int(flags["--train-samples"])
    assert plan["n_tokens"] <= samples * int(flags["--seq-length"]) < plan["n_tokens"] * 1.01
    _check_groups(text, plan)
    cannot = "\n".join(_cannot(text))
    # one --lr: the norms and biases lose their own LR; the forward multipliers have no flag
    for needed in ("block_norm lr: plan", "final_norm eps: plan", "embedding weight_decay: plan",
                   "residual branch multiplier", "logit multiplier", "attention logit scale"):
        assert needed in cannot, needed


def test_torchtitan_job_file_loads_to_the_plan(plan, exported):
    text = exported["torchtitan"]
    job = tomllib.loads(text)
    for section, keys in job.items():  # torchtitan refuses unknown sections and keys
        assert section in TORCHTITAN_KEYS and set(keys) <= TORCHTITAN_KEYS[section], (section, keys)
    hp = plan["hparams"]
    assert job["optimizer"]["lr"] == hp["groups"]["hidden_weight"]["lr"]
    assert job["optimizer"]["eps"] == hp["groups"]["hidden_weight"]["eps"]
    assert job["optimizer"]["weight_decay"] == hp["groups"]["hidden_weight"]["weight_decay"]
    assert job["training"]["seq_len"] == plan["target"]["seq_len"]
    tokens = job["training"]["steps"] * job["training"]["global_batch_size"] * job["training"]["seq_len"]
    assert plan["n_tokens"] <= tokens < plan["n_tokens"] * 1.01
    # the shape: the commented model flavor, as Python
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if "TransformerModelArgs(" in l)
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "# )")
    call = ast.parse("\n".join(l[2:] for l in lines[start:end + 1])).body[0].value
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert set(kwargs) <= TORCHTITAN_MODEL_ARGS
    assert (kwargs["dim"], kwargs["n_layers"], kwargs["n_heads"]) == (plan["n_embd"], plan["n_layer"], plan["n_head"])
    assert kwargs["vocab_size"] == plan["target"]["vocab_size"]
    _check_groups(text, plan)
    assert "block_norm weight_decay: plan 0.0" in "\n".join(_cannot(text))  # one WD covers norms too


def test_json_export_is_the_plan(plan, exported):
    assert json.loads(exported["json"]) == plan


@pytest.mark.parametrize("parameterization, mup, depth", [("mup", True, False), ("sp", False, False)])
def test_nanogpt_mup_switches_follow_the_parameterization(parameterization, mup, depth):
    plan = json.loads(_invoke(ARGS + ["-p", parameterization, "--json"]).stdout)
    text = render(plan, "nanogpt-mup")
    cfg: dict = {}
    exec(text, cfg)
    assert cfg["mup_enabled"] is mup and cfg["depth_alpha_enabled"] is depth
    assert "depth_multiplier" not in cfg
    cannot = "\n".join(_cannot(text))
    if parameterization == "mup":  # nanoGPT-mup keeps λ_base on μP's hidden weights; Table 1 says λ·m_N
        assert "hidden_weight weight_decay: plan" in cannot and "hidden_weight eps: plan" in cannot
    else:  # SP: its GPT-2 residual init, which Table 1 does not have
        assert "sqrt(2 n_layer)" in cannot


def test_plan_without_hyperparameters_still_exports_the_shape(plan):
    bare = json.loads(json.dumps(plan))
    bare["hparams"] = None
    bare["assumptions"]["hparams"] = "no transferred hyperparameters: the runs record no base shape"
    cfg: dict = {}
    exec(render(bare, "nanogpt-mup"), cfg)
    assert cfg["n_embd"] == plan["n_embd"] and "learning_rate" not in cfg
    argv = shlex.split(render(bare, "megatron"), comments=True)
    assert "--lr" not in argv and argv[argv.index("--num-layers") + 1] == str(plan["n_layer"])
    job = tomllib.loads(render(bare, "torchtitan"))
    assert "optimizer" not in job
    for fmt in ("nanogpt-mup", "megatron", "torchtitan"):
        assert "record no base shape" in render(bare, fmt)


def test_bad_format_and_unwritable_path_are_one_line_errors(plan, tmp_path):
    with pytest.raises(CpPlanError, match="unknown export format 'yaml'; use one of nanogpt-mup"):
        render(plan, "yaml")
    with pytest.raises(CpPlanError, match="cannot write .*does not exist"):
        write_export(plan, "json", tmp_path / "missing" / "plan.json")
    with pytest.raises(CpPlanError, match="is a directory"):
        write_export(plan, "json", tmp_path)
    proc = subprocess.run([sys.executable, "-c", "import cli; cli.main()", *ARGS, "--export", "yaml",
                           "--out", str(tmp_path / "p.yaml")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "unknown --export format" in proc.stderr
    assert not (tmp_path / "p.yaml").exists()


def test_export_replaces_a_file_atomically(plan, tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text("old", encoding="utf-8")
    write_export(plan, "torchtitan", path)
    assert tomllib.loads(path.read_text(encoding="utf-8"))["model"]["name"] == "llama3"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.toml"]


def test_export_without_out_prints_the_file(plan):
    res = _invoke(ARGS + ["--export", "megatron"])
    assert res.stdout.startswith("# megatron settings") and "--num-layers" in res.stdout
