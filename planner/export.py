"""A plan as a training config for another stack: nanoGPT-mup, Megatron-LM, torchtitan, or JSON.

Pure formatting of ``Plan.to_dict()`` (planner.recommend): no torch, no I/O except
:func:`write_export`, which writes one file atomically. Field names were checked against each
project's public source (the README's "Export" section names the versions):

- ``nanogpt-mup``: EleutherAI/nanoGPT-mup, branch ``completep``: the module-level settings of
  ``train.py`` and the ``GPTConfig`` fields of ``model.py``. A config file there is Python that
  ``configurator.py`` runs with ``exec``; the μP/CompleteP switches derive every per-group value
  from η_base, λ_base, ε_base, σ_base and the two multipliers.
- ``megatron``: NVIDIA/Megatron-LM ``megatron/training/arguments.py`` (core_v0.13.0): one
  ``--flag value`` per line, ``#`` comments, read with ``shlex.split(text, comments=True)``.
  Megatron has one LR (plus ``--decoupled-lr`` for the embedding and output layer), one weight
  decay, one ε and one init std.
- ``torchtitan``: pytorch/torchtitan ``torchtitan/config/job_config.py`` (v0.2.2): a TOML job file.
  Its loader refuses unknown keys, so the model shape, which torchtitan takes from a registered
  model flavor and not from the job file, is written as a commented ``TransformerModelArgs``.
- ``json``: the whole plan, exactly what ``cp-plan recommend --json`` prints.

Whatever a target cannot express (per-group LR, weight decay, ε or init std; forward multipliers)
is listed in a comment block with the value the plan asks for and the value the target would use
instead; the plan's full per-group table follows as ``# cp-plan group:`` lines, one per group.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Mapping

from planner.errors import CpPlanError
from planner.plainjson import plain

# The plan fixes the token count, not the batch: a global batch of about 2^20 tokens is a common
# choice at the scales the planner targets; every file says so and where to change it.
GLOBAL_BATCH_TOKENS = 2**20
WARMUP_FRACTION = 0.1  # linear warmup then linear decay to 0 (docs/PARAMETERIZATION.md, choice 8)

GROUP_FIELDS = ("init", "init_std", "lr", "lr_mult", "weight_decay", "eps")
MULTIPLIER_FIELDS = ("residual_mult", "output_mult", "input_mult", "attn_scale")

# Versions the field names were checked against (also in the README's "Export" section).
TARGET_VERSIONS = {
    "nanogpt-mup": "EleutherAI/nanoGPT-mup branch completep @ 6f8bc3b (train.py, model.py, configurator.py)",
    "megatron": "NVIDIA/Megatron-LM core_v0.13.0 @ c550cf6 (megatron/training/arguments.py)",
    "torchtitan": "pytorch/torchtitan v0.2.2 @ 73a0e69 (torchtitan/config/job_config.py, "
                  "torchtitan/models/llama3/model/args.py)",
}


# ---------------------------------------------------------------------- helpers


def _num(x) -> str:
    """A number written so that Python, TOML and argparse read back exactly the same value."""
    if isinstance(x, bool):
        raise CpPlanError(f"cannot export the boolean {x!r} as a number")
    if isinstance(x, int):
        return str(x)
    x = float(x)
    if not math.isfinite(x):
        raise CpPlanError(f"the plan holds a non-finite number ({x}); it cannot be exported")
    return repr(x)


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)


def _family(hp: Mapping) -> str:
    name = str(hp.get("parameterization", ""))
    return name if name in ("sp", "mup") else "depth"


def _schedule(plan: Mapping) -> dict:
    """Batch and step counts for the plan's tokens at GLOBAL_BATCH_TOKENS per step."""
    seq_len = int(plan["target"]["seq_len"])
    seqs = max(1, round(GLOBAL_BATCH_TOKENS / seq_len))
    steps = max(1, math.ceil(int(plan["n_tokens"]) / (seqs * seq_len)))
    micro = next(m for m in (8, 4, 2, 1) if seqs % m == 0)
    return {"seq_len": seq_len, "global_batch": seqs, "micro_batch": micro, "accum": seqs // micro,
            "steps": steps, "warmup_steps": max(1, round(WARMUP_FRACTION * steps)),
            "samples": steps * seqs}


def _header(plan: Mapping, target: str, *usage: str) -> str:
    """The comment block every export opens with: the plan, the batch and schedule, then ``usage``."""
    t = plan["target"]
    sched = _schedule(plan)
    lines = [
        f"{target} settings for a cp-plan plan: {plan['parameterization']} on {plan['hardware']['name']}",
        f"shape n_embd {plan['n_embd']}, n_layer {plan['n_layer']}, n_head {plan['n_head']} "
        f"(head size {plan['d_head']}), {plan['n_params']:,} non-embedding params, "
        f"{plan['n_tokens']:,} tokens ({t['tokens_per_param']:g} per param), vocab {t['vocab_size']}, "
        f"seq_len {t['seq_len']}",
        f"predicted loss {plan['predicted_loss']:.4g} (the law's, at {t['n_params_used']:.3g} params)",
        f"field names checked against {TARGET_VERSIONS[target]}",
        f"batch: not part of the plan; {sched['global_batch']} sequences x {sched['seq_len']} tokens "
        f"per step (about {GLOBAL_BATCH_TOKENS:,} tokens) for {sched['steps']:,} steps: change the batch "
        "and keep steps x batch tokens = the plan's tokens",
        f"schedule: linear warmup over {WARMUP_FRACTION:.0%} of the steps, then linear decay to 0 "
        "(the schedule of cp-plan's runs)",
    ]
    for w in plan.get("warnings") or []:
        lines.append(f"plan warning: {w}")
    return _comment(lines + list(usage))


def _group_lines(plan: Mapping) -> list[str]:
    """The plan's per-group table and multipliers as ``cp-plan group:`` comment lines (exact)."""
    hp = plan.get("hparams")
    if not hp:
        why = (plan.get("assumptions") or {}).get("hparams") or "the plan carries no hyperparameters"
        return ["No per-group hyperparameters in this plan: " + why]
    lines = [
        f"The plan's per-group hyperparameters ({hp['parameterization']}"
        + (f", alpha {hp['alpha']:g}" if hp.get("alpha") is not None else "")
        + f"; base shape n_embd {hp['base_n_embd']}, n_layer {hp['base_n_layer']}; "
        f"width_mult {hp['width_mult']:g}, depth_mult {hp['depth_mult']:g}). Peak LR per group; "
        "the schedule multiplies every group alike:",
    ]
    for name, g in hp["groups"].items():
        fields = []
        for f in GROUP_FIELDS:
            v = g.get(f)
            fields.append(f"{f}={'none' if v is None else (v if isinstance(v, str) else _num(v))}")
        lines.append(f"cp-plan group: {name} " + " ".join(fields))
    lines.append("cp-plan multipliers: " + " ".join(f"{f}={_num(hp[f])}" for f in MULTIPLIER_FIELDS)
                 + f" attn_scale_kind={hp['attn_scale_kind']}")
    return lines


def _differences(plan: Mapping, effective: Mapping[str, Mapping], how: Mapping[str, str],
                 target: str) -> list[str]:
    """Lines naming every per-group value the target would set differently from the plan."""
    hp = plan.get("hparams")
    if not hp:
        return []
    out = []
    for name, g in hp["groups"].items():
        eff = effective.get(name, {})
        for f in ("lr", "weight_decay", "eps", "init_std"):
            if f not in eff or _close(g.get(f), eff[f]):
                continue
            gets = "no such setting" if eff[f] is None else _num(eff[f])
            want = "none" if g.get(f) is None else _num(g[f])
            out.append(f"  {name} {f}: plan {want}, {target} {gets} ({how.get(f, '')})")
    return out


def _comment(lines: list[str]) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def _cannot_express(plan, effective, how, target, extra: list[str]) -> list[str]:
    diffs = _differences(plan, effective, how, target)
    lines = []
    if diffs or extra:
        lines.append(f"What {target} cannot express as the plan asks (set these by hand in its code):")
        lines += diffs
        lines += [f"  {e}" for e in extra]
    else:
        lines.append(f"{target} expresses every per-group value of the plan.")
    return lines


# ---------------------------------------------------------------------- nanoGPT-mup


def _nanogpt_effective(plan: Mapping) -> dict:
    """Per-group values nanoGPT-mup (completep branch) derives from the settings we write.

    Its rules, as read from ``model.py`` ``configure_optimizers`` and ``GPT.__init__``: token
    embedding and unembedding are tied (one group); every group shares one AdamW ε, scaled by
    m_N^(−1)·m_L^(−α) for all groups when depth-α is on; under μP the hidden weight decay stays
    λ_base; without μP every 2-D weight decays by λ_base and the output projections start at
    σ/√(2L)."""
    hp = plan["hparams"]
    base = hp["base"]
    eta, sigma, lam, eps = base["lr"], base["init_std"], base["weight_decay"], base["eps"]
    m_n, m_l = hp["width_mult"], hp["depth_mult"]
    fam = _family(hp)
    if fam == "sp":
        g_eps, lr_n, lr_h, wd_h, std_h = eps, eta, eta, lam, sigma
    elif fam == "mup":
        g_eps, lr_n, lr_h, wd_h, std_h = eps, eta, eta / m_n, lam, sigma / math.sqrt(m_n)
    else:
        alpha = hp["alpha"]
        depth_lr = m_l ** (alpha - 1.0)
        g_eps = eps / m_n * m_l ** (-alpha)
        lr_n, lr_h, wd_h, std_h = eta * depth_lr, eta * depth_lr / m_n, lam * m_n, sigma / math.sqrt(m_n)
    emb = {"lr": eta, "weight_decay": lam, "eps": g_eps, "init_std": sigma}
    return {
        "embedding": emb,
        "block_norm": {"lr": lr_n, "weight_decay": 0.0, "eps": g_eps},
        "hidden_weight": {"lr": lr_h, "weight_decay": wd_h, "eps": g_eps, "init_std": std_h},
        "hidden_bias": {"lr": lr_n, "weight_decay": 0.0, "eps": g_eps},
        "final_norm": {"lr": eta, "weight_decay": 0.0, "eps": g_eps},
        "unembedding": dict(emb),  # tied to the token embedding
    }


def render_nanogpt_mup(plan: Mapping) -> str:
    """A config file for EleutherAI/nanoGPT-mup (``python train.py config/<file>.py``)."""
    sched = _schedule(plan)
    hp = plan.get("hparams")
    out = [_header(plan, "nanogpt-mup", "run: torchrun --standalone --nproc_per_node=8 train.py config/this_file.py "
                   "(on the completep branch)")]
    out.append("\n# model\n")
    out.append(f"n_layer = {plan['n_layer']}\n")
    out.append(f"n_embd = {plan['n_embd']}\n")
    out.append(f"n_head = {plan['n_head']}  # head size {plan['d_head']}\n")
    out.append(f"block_size = {sched['seq_len']}\n")
    out.append("bias = True  # the plan's parameter count has biases in LayerNorm and the blocks' linear layers\n")
    out.append("dropout = 0.0\n")
    out.append("\n# batch and schedule (nanoGPT-mup decays by cosine to min_lr; cp-plan's runs decayed "
               "linearly to 0)\n")
    out.append(f"batch_size = {sched['micro_batch']}  # micro-batch sequences per GPU\n")
    out.append(f"gradient_accumulation_steps = {sched['accum']}  # across all GPUs: train.py divides it "
               "by the world size\n")
    out.append(f"max_iters = {sched['steps']}\n")
    out.append(f"lr_decay_iters = {sched['steps']}\n")
    out.append(f"warmup_iters = {sched['warmup_steps']}\n")
    out.append("decay_lr = True\n")
    out.append("min_lr = 0.0\n")
    extra = ["token embedding and unembedding: nanoGPT-mup ties them (one tensor); the plan has them "
             "untied, which the plan's parameter count assumes"]
    if hp:
        base = hp["base"]
        fam = _family(hp)
        out.append("\n# base hyperparameters (nanoGPT-mup scales them per group itself)\n")
        out.append(f"learning_rate = {_num(base['lr'])}  # eta_base\n")
        out.append(f"weight_decay = {_num(base['weight_decay'])}  # lambda_base (coupled AdamW)\n")
        out.append(f"adam_eps = {_num(base['eps'])}  # epsilon_base\n")
        out.append(f"init_std = {_num(base['init_std'])}  # sigma_base\n")
        out.append("\n# parameterization\n")
        out.append(f"mup_enabled = {fam != 'sp'}\n")
        if fam != "sp":
            out.append(f"mup_width_multiplier = {_num(hp['width_mult'])}  # n_embd / base n_embd "
                       f"{hp['base_n_embd']}\n")
            out.append(f"mup_input_alpha = {_num(base.get('input_mult', 1.0))}\n")
            out.append(f"mup_output_alpha = {_num(base.get('output_mult', 1.0))}\n")
        out.append(f"depth_alpha_enabled = {fam == 'depth'}\n")
        if fam == "depth":
            out.append(f"depth_multiplier = {_num(hp['depth_mult'])}  # n_layer / base n_layer "
                       f"{hp['base_n_layer']}\n")
            out.append(f"depth_alpha_exp = {_num(hp['alpha'])}\n")
        how = {"lr": "its lr_scale rules", "weight_decay": "its weight-decay rules",
               "eps": "one AdamW eps for every group", "init_std": "its init rules"}
        if fam == "sp":
            extra.append(f"hidden_weight init_std: nanoGPT-mup starts attn c_proj and mlp c_proj at "
                         f"init_std/sqrt(2 n_layer) = {_num(base['init_std'] / math.sqrt(2 * plan['n_layer']))} "
                         "under SP; the plan keeps init_std")
        text_cannot = _cannot_express(plan, _nanogpt_effective(plan), how, "nanogpt-mup", extra)
    else:
        out.append("\n# no base hyperparameters: learning_rate, weight_decay, adam_eps, init_std and the "
                   "mup_* / depth_* settings are left at nanoGPT-mup's defaults; tune them at a base shape\n")
        text_cannot = _cannot_express(plan, {}, {}, "nanogpt-mup", extra)
    out.append("\n" + _comment(text_cannot + [""] + _group_lines(plan)))
    return "".join(out)


# ---------------------------------------------------------------------- Megatron-LM


def _one_value_settings(hp: Mapping) -> dict:
    """The single LR, weight decay, ε and init std a one-group optimizer gets: the hidden weights'
    (nearly all the parameters)."""
    h = hp["groups"]["hidden_weight"]
    return {"lr": h["lr"], "weight_decay": h["weight_decay"], "eps": h["eps"], "init_std": h["init_std"]}


def _megatron_effective(plan: Mapping, s: Mapping) -> dict:
    """Megatron's per-group values from one --lr (embedding and output layer: --decoupled-lr),
    one --weight-decay (biases and norms: none), one --adam-eps and one --init-method-std."""
    emb = {"lr": s["decoupled_lr"], "weight_decay": s["weight_decay"], "eps": s["eps"], "init_std": s["init_std"]}
    inner = {"lr": s["lr"], "weight_decay": 0.0, "eps": s["eps"]}
    return {
        "embedding": emb,
        "block_norm": dict(inner),
        "hidden_weight": {"lr": s["lr"], "weight_decay": s["weight_decay"], "eps": s["eps"],
                          "init_std": s["init_std"]},
        "hidden_bias": dict(inner),
        "final_norm": dict(inner),
        "unembedding": dict(emb),
    }


def render_megatron(plan: Mapping) -> str:
    """Megatron-LM arguments, one per line (``pretrain_gpt.py $(grep -v '^#' FILE) ...``)."""
    sched = _schedule(plan)
    hp = plan.get("hparams")
    out = [_header(plan, "megatron", "use: torchrun ... pretrain_gpt.py $(grep -v '^#' THIS_FILE) --data-path ... "
                   "--tokenizer-type ... (parallelism flags are yours to add)")]
    args: list[tuple[str, str | None, str]] = [
        ("--num-layers", str(plan["n_layer"]), ""),
        ("--hidden-size", str(plan["n_embd"]), ""),
        ("--ffn-hidden-size", str(4 * plan["n_embd"]), "4N GELU MLP, as the plan counts parameters"),
        ("--num-attention-heads", str(plan["n_head"]), ""),
        ("--kv-channels", str(plan["d_head"]), "head size"),
        ("--seq-length", str(sched["seq_len"]), ""),
        ("--max-position-embeddings", str(sched["seq_len"]), ""),
        ("--position-embedding-type", "learned_absolute", ""),
        ("--normalization", "LayerNorm", ""),
        ("--untie-embeddings-and-output-weights", None, "the plan's embeddings are untied"),
        ("--global-batch-size", str(sched["global_batch"]), "not part of the plan"),
        ("--train-samples", str(sched["samples"]), "the plan's tokens / seq_len, whole batches"),
        ("--lr-decay-style", "linear", ""),
        ("--lr-warmup-samples", str(sched["warmup_steps"] * sched["global_batch"]), ""),
        ("--lr-decay-samples", str(sched["samples"]), ""),
        ("--min-lr", "0.0", ""),
    ]
    extra = []
    if hp:
        s = _one_value_settings(hp)
        s["decoupled_lr"] = hp["groups"]["embedding"]["lr"]
        args += [
            ("--lr", _num(s["lr"]), "the hidden weights' peak LR"),
            ("--decoupled-lr", _num(s["decoupled_lr"]), "embedding and output layer"),
            ("--decoupled-min-lr", "0.0", ""),
            ("--weight-decay", _num(s["weight_decay"]), "the hidden weights' (coupled AdamW)"),
            ("--adam-eps", _num(s["eps"]), "the residual blocks' epsilon"),
            ("--init-method-std", _num(s["init_std"]), "the hidden weights' init std"),
        ]
        how = {"lr": "--lr / --decoupled-lr", "weight_decay": "--weight-decay; none on biases and norms",
               "eps": "one --adam-eps", "init_std": "one --init-method-std"}
        extra.append(f"hidden_weight init_std: Megatron starts the attention and MLP output projections at "
                     f"--init-method-std/sqrt(2 num_layers) = {_num(s['init_std'] / math.sqrt(2 * plan['n_layer']))}; "
                     "the plan keeps one std for all hidden weights (no depth-dependent init)")
        extra += _multiplier_lines(hp, "Megatron")
        cannot = _cannot_express(plan, _megatron_effective(plan, s), how, "megatron", extra)
    else:
        cannot = _cannot_express(plan, {}, {}, "megatron", extra)
    body = []
    for flag, value, note in args:
        line = flag if value is None else f"{flag} {value}"
        body.append(f"{line}\n" if not note else f"# {flag}: {note}\n{line}\n")
    out.append("\n" + "".join(body))
    if not hp:
        out.append("# no base hyperparameters: --lr, --weight-decay, --adam-eps and --init-method-std "
                   "are not set; tune them at a base shape\n")
    out.append("\n" + _comment(cannot + [""] + _group_lines(plan)))
    return "".join(out)


def _multiplier_lines(hp: Mapping, target: str) -> list[str]:
    """Forward multipliers a target without μP/CompleteP support cannot set."""
    lines = []
    if not _close(hp["residual_mult"], 1.0):
        lines.append(f"residual branch multiplier {_num(hp['residual_mult'])} (x + m * F(LN(x))): {target} has none")
    if not _close(hp["output_mult"], 1.0):
        lines.append(f"logit multiplier {_num(hp['output_mult'])}: {target} has none")
    if not _close(hp["input_mult"], 1.0):
        lines.append(f"embedding multiplier {_num(hp['input_mult'])}: {target} has none")
    if hp["attn_scale_kind"] != "1/sqrt(d)":
        lines.append(f"attention logit scale {hp['attn_scale_kind']} = {_num(hp['attn_scale'])}: {target} "
                     "uses 1/sqrt(head size)")
    return lines


# ---------------------------------------------------------------------- torchtitan


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def render_torchtitan(plan: Mapping) -> str:
    """A torchtitan TOML job file (``--job.config_file FILE``) and the model flavor to register."""
    sched = _schedule(plan)
    hp = plan.get("hparams")
    t = plan["target"]
    flavor = [
        "Model shape: torchtitan reads it from a registered model flavor, not from the job file",
        "(its loader refuses unknown keys). Add to llama3_args in torchtitan/models/llama3/__init__.py:",
        "",
        'llama3_args["cp-plan"] = TransformerModelArgs(',
        f"    dim={plan['n_embd']},",
        f"    n_layers={plan['n_layer']},",
        f"    n_heads={plan['n_head']},",
        f"    vocab_size={t['vocab_size']},",
        f"    max_seq_len={sched['seq_len']},",
        ")",
        "",
        "llama3 is a SwiGLU / RMSNorm / RoPE model without biases: its parameter count differs from the",
        "plan's GPT-2-style 12N^2+13N per layer; the width, depth and heads are the plan's.",
    ]
    out = [_header(plan, "torchtitan", "", *flavor)]
    out.append("\n[job]\n")
    out.append(f"description = {_toml_str('cp-plan ' + str(plan['parameterization']) + ' plan: n_embd ' + str(plan['n_embd']) + ', n_layer ' + str(plan['n_layer']))}\n")
    out.append("\n[model]\nname = \"llama3\"\nflavor = \"cp-plan\"\n")
    extra = ["init std: torchtitan's llama3 sets its own (0.02, divided by sqrt(2 x depth) in the "
             "blocks: Transformer.init_weights); no job-file setting"]
    if hp:
        s = _one_value_settings(hp)
        out.append("\n[optimizer]\nname = \"AdamW\"\n")
        out.append(f"lr = {_num(s['lr'])}  # the hidden weights' peak LR\n")
        out.append(f"eps = {_num(s['eps'])}  # the residual blocks' epsilon\n")
        out.append(f"weight_decay = {_num(s['weight_decay'])}  # the hidden weights' (coupled AdamW)\n")
        eff = {g: {"lr": s["lr"], "weight_decay": s["weight_decay"], "eps": s["eps"]} for g in hp["groups"]}
        how = {"lr": "one [optimizer] lr", "weight_decay": "one weight_decay, norms and biases included",
               "eps": "one eps"}
        extra += _multiplier_lines(hp, "torchtitan")
        cannot = _cannot_express(plan, eff, how, "torchtitan", extra)
        init_stds = [f"{n} {_num(g['init_std'])}" for n, g in hp["groups"].items() if g.get("init_std") is not None]
        cannot.append("  plan init std per group: " + ", ".join(init_stds))
    else:
        out.append("\n# no base hyperparameters: [optimizer] lr, eps and weight_decay are not set\n")
        cannot = _cannot_express(plan, {}, {}, "torchtitan", extra)
    out.append("\n[lr_scheduler]\n")
    out.append(f"warmup_steps = {sched['warmup_steps']}\n")
    out.append("decay_type = \"linear\"\nmin_lr_factor = 0.0\n")
    out.append("\n[training]\n")
    out.append(f"seq_len = {sched['seq_len']}\n")
    out.append(f"global_batch_size = {sched['global_batch']}  # sequences; not part of the plan\n")
    out.append(f"local_batch_size = {sched['micro_batch']}\n")
    out.append(f"steps = {sched['steps']}  # the plan's tokens / (global_batch_size x seq_len)\n")
    out.append("\n" + _comment(cannot + [""] + _group_lines(plan)))
    return "".join(out)


# ---------------------------------------------------------------------- JSON and dispatch





def render_json(plan: Mapping) -> str:
    """The whole plan as JSON (as ``cp-plan recommend --json`` prints it)."""
    return json.dumps(plain(plan), indent=2, default=str) + "\n"


FORMATS: dict[str, Callable[[Mapping], str]] = {
    "nanogpt-mup": render_nanogpt_mup,
    "megatron": render_megatron,
    "torchtitan": render_torchtitan,
    "json": render_json,
}


def render(plan: Mapping, fmt: str) -> str:
    """The plan (``Plan.to_dict()``) in export format ``fmt`` (one of :data:`FORMATS`)."""
    key = str(fmt).strip().lower()
    if key not in FORMATS:
        raise CpPlanError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    return FORMATS[key](plan)


def write_export(plan: Mapping, fmt: str, path: str | os.PathLike) -> Path:
    """Render ``plan`` as ``fmt`` and write it to ``path`` through :func:`planner.fileio.write_atomic`
    (temp file + os.replace; symlinks followed, an existing file's mode kept, devices and pipes
    refused). Returns the path written."""
    from planner.fileio import write_atomic

    text = render(plan, fmt)  # an unknown format fails before anything touches the disk
    path = Path(path)
    if path.is_dir():
        raise CpPlanError(f"--out {path} is a directory; give a file name, e.g. {path / ('plan.' + _suffix(fmt))}")
    return write_atomic(path, text)


def _suffix(fmt: str) -> str:
    return {"nanogpt-mup": "py", "megatron": "args", "torchtitan": "toml", "json": "json"}.get(str(fmt).lower(), "txt")
