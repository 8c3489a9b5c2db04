"""Hardware profiles: small cost models over transformer shapes (no torch).

The compute-efficient band (N:L whose predicted loss is within a tolerance of the best at a given
compute) says which shapes are nearly free in loss; a hardware profile says which of them to
build. Each profile is one frozen :class:`HardwareProfile`: hard constraints (width and depth
granularity, a cap on one layer's weight bytes, a maximum depth) and an ``objective`` that ranks
the feasible shapes:

- ``deepest`` (``weight-streaming``): weights stream from external memory one layer at a time and
  activations stay on the wafer (Cerebras), so only per-layer weight memory binds and throughput
  is roughly shape-neutral; depth is cheap, so pick the deepest shape inside the band.
- ``step_time`` (``gpu``): tensor- and pipeline-parallel GPUs. Estimated training step time
  (:meth:`HardwareProfile.step_time_s`) from matmul efficiency rising with width, tensor-parallel
  all-reduces whose cost relative to compute falls as 1/N, a fixed overhead per layer, and the
  pipeline bubble (p−1)/(m+p−1) (Anthony et al. 2024, "The case for co-designing model
  architectures with hardware"; Narayanan et al. 2021, Megatron-LM). Pick the fastest in the band.
- ``latency`` (``latency``): per-token inference time ≈ bytes read (weights, unembedding, KV cache
  2·L·N per context token) / memory bandwidth + a fixed cost per layer
  (:meth:`HardwareProfile.latency_s`). Pick the lowest latency in the band.
- ``loss`` (``memory``, ``flat``): pick the lowest predicted loss among shapes meeting the
  constraints, whether or not it lies in the band (``memory`` caps per-layer weight bytes;
  ``flat`` has no constraint, so its pick is the law's loss-optimal shape).

The models rank shapes; their absolute seconds are rough estimates from the documented defaults,
not performance predictions. User profiles come from TOML or JSON files (:func:`load_profile`)
with the fields of :class:`HardwareProfile` (see ``PROFILE_FIELDS``) and an optional
``base = "<shipped profile>"`` to start from.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from planner.errors import CpPlanError
from planner.shapes import Shape, block_params, flops_per_token

OBJECTIVES = ("deepest", "step_time", "latency", "loss")


@dataclass(frozen=True)
class HardwareProfile:
    """A cost model over shapes. Every field can be set in a user profile file.

    Units: bytes, seconds, FLOP/s. Defaults describe an H100-class GPU where a number is needed.
    """

    name: str
    objective: str  # one of OBJECTIVES: how feasible shapes are ranked
    description: str = ""
    d_head: int = 64  # head size; n_head = n_embd / d_head
    width_multiple: int | None = None  # n_embd must be a multiple of this (None: of d_head) and of d_head·tensor_parallel
    max_layer: int | None = None  # deepest shape allowed (None: no limit)
    max_layer_bytes: float | None = None  # cap on one block's weight bytes (None: no cap)
    bytes_per_param: float = 2.0  # weight storage (bf16)
    # Training step-time model (objective "step_time").
    peak_flops_per_s: float = 989e12  # per GPU; H100 SXM dense bf16
    matmul_half_width: float = 256.0  # per-GPU matmul width at which efficiency is half of peak
    tensor_parallel: int = 1  # GPUs splitting each layer (n_head must divide evenly)
    pipeline_stages: int = 1  # n_layer must be a multiple of this
    microbatches: int = 16  # per step and pipeline; bubble = (p−1)/(m+p−1)
    microbatch_tokens: int = 16384  # tokens per microbatch
    link_bytes_per_s: float = 450e9  # tensor-parallel all-reduce bandwidth per GPU (NVLink 4, one way)
    layer_overhead_s: float = 3e-5  # fixed time per layer per microbatch (kernel launches, syncs)
    # Inference latency model (objective "latency").
    mem_bytes_per_s: float = 3.35e12  # HBM bandwidth (H100 SXM)
    layer_latency_s: float = 1e-5  # fixed time per layer per generated token
    context_tokens: int = 2048  # KV-cache length read per generated token

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise CpPlanError(f"hardware profile name={self.name!r} must be a non-empty string")
        if self.objective not in OBJECTIVES:
            raise CpPlanError(
                f"hardware profile {self.name!r}: objective={self.objective!r} is not one of "
                f"{', '.join(OBJECTIVES)}"
            )
        for key in ("d_head", "width_multiple", "tensor_parallel", "pipeline_stages",
                    "microbatches", "microbatch_tokens", "context_tokens"):
            value = getattr(self, key)
            if key == "width_multiple" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CpPlanError(
                    f"hardware profile {self.name!r}: {key}={value!r} must be a positive integer"
                )
        if self.max_layer is not None and (not isinstance(self.max_layer, int)
                                           or isinstance(self.max_layer, bool) or self.max_layer < 1):
            raise CpPlanError(
                f"hardware profile {self.name!r}: max_layer={self.max_layer!r} must be a positive "
                "integer or absent"
            )
        for key in ("bytes_per_param", "peak_flops_per_s", "matmul_half_width", "link_bytes_per_s",
                    "mem_bytes_per_s", "max_layer_bytes"):
            value = getattr(self, key)
            if key == "max_layer_bytes" and value is None:
                continue
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value) or value <= 0):
                raise CpPlanError(
                    f"hardware profile {self.name!r}: {key}={value!r} must be a positive number"
                )
        for key in ("layer_overhead_s", "layer_latency_s"):
            value = getattr(self, key)
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value) or value < 0):
                raise CpPlanError(
                    f"hardware profile {self.name!r}: {key}={value!r} must be a number ≥ 0"
                )

    # ------------------------------------------------------------------ constraints

    @property
    def width_step(self) -> int:
        """Granularity of n_embd: lcm of width_multiple (default d_head) and d_head·tensor_parallel
        (whole heads on every tensor-parallel rank)."""
        return math.lcm(self.width_multiple or self.d_head, self.d_head * self.tensor_parallel)

    @property
    def depth_step(self) -> int:
        """Granularity of n_layer: equal layers on every pipeline stage."""
        return self.pipeline_stages

    def layer_bytes(self, n_embd: int) -> float:
        """Weight bytes of one block: (12N² + 13N)·bytes_per_param."""
        return float(block_params(n_embd)) * self.bytes_per_param

    def violations(self, shape: Shape) -> list[str]:
        """Why ``shape`` cannot run on this hardware (empty when it can)."""
        out = []
        if shape.d_head != self.d_head:
            out.append(f"head size {shape.d_head} is not the profile's {self.d_head}")
        if shape.n_embd % self.width_step:
            out.append(f"n_embd {shape.n_embd} is not a multiple of {self.width_step}")
        if shape.n_layer % self.depth_step:
            out.append(f"n_layer {shape.n_layer} is not divisible by {self.depth_step} pipeline stages")
        if self.max_layer is not None and shape.n_layer > self.max_layer:
            out.append(f"deeper than allowed ({shape.n_layer} > max_layer {self.max_layer})")
        if self.max_layer_bytes is not None and self.layer_bytes(shape.n_embd) > self.max_layer_bytes:
            out.append(f"per-layer weights {_bytes(self.layer_bytes(shape.n_embd))} exceed the "
                       f"{_bytes(self.max_layer_bytes)} cap")
        return out

    # ------------------------------------------------------------------ cost models

    def step_time_s(self, shape: Shape, vocab_size: int, seq_len: int) -> float:
        """Estimated time of one training step (``microbatches`` × ``microbatch_tokens`` tokens)
        on one model replica of tensor_parallel × pipeline_stages GPUs.

        Per pipeline stage and microbatch: FLOPs (6P + 6NV + 12LNT per token, PaLM appendix B)
        / (tp · peak · efficiency(N/tp)) with efficiency w/(w + matmul_half_width); plus per layer
        4 ring all-reduces of the activations, 2(tp−1)/tp · tokens · N · 2 bytes each, over the
        link; plus ``layer_overhead_s`` per layer. A step is (m + p − 1) stage-slots (pipeline
        bubble (p−1)/(m+p−1), Narayanan et al. 2021).
        """
        n, l, tp, pp = shape.n_embd, shape.n_layer, self.tensor_parallel, self.pipeline_stages
        tokens = self.microbatch_tokens
        flops = flops_per_token(n, l, vocab_size, seq_len) * tokens
        per_gpu_width = n / tp
        efficiency = per_gpu_width / (per_gpu_width + self.matmul_half_width)
        compute = flops / pp / (tp * self.peak_flops_per_s * efficiency)
        allreduce = 4 * 2.0 * (tp - 1) / tp * tokens * n * 2.0 / self.link_bytes_per_s
        per_stage = compute + (l / pp) * (allreduce + self.layer_overhead_s)
        return (self.microbatches + pp - 1) * per_stage

    def latency_s(self, shape: Shape, vocab_size: int) -> float:
        """Estimated time to generate one token at batch 1: bytes read / bandwidth + a fixed cost
        per layer. Bytes: non-embedding weights, the unembedding (N·V), and the KV cache
        2·L·N·context_tokens values (larger for deep-narrow shapes at fixed P)."""
        n, l = shape.n_embd, shape.n_layer
        values = shape.n_params + n * vocab_size + 2.0 * l * n * self.context_tokens
        return values * self.bytes_per_param / self.mem_bytes_per_s + l * self.layer_latency_s

    def cost(self, shape: Shape, vocab_size: int, seq_len: int) -> dict:
        """The metrics this profile ranks by, plus per-layer weight bytes (plain dict)."""
        out = {"layer_bytes": self.layer_bytes(shape.n_embd)}
        if self.objective == "step_time":
            out["step_time_s"] = self.step_time_s(shape, vocab_size, seq_len)
            out["step_tokens"] = self.microbatches * self.microbatch_tokens
        elif self.objective == "latency":
            out["latency_s"] = self.latency_s(shape, vocab_size)
        return out

    def score(self, shape: Shape, loss: float, vocab_size: int, seq_len: int) -> tuple:
        """Sort key, lower is better; ties break on predicted loss, then on width."""
        if self.objective == "deepest":
            return (-shape.n_layer, loss, shape.n_embd)
        if self.objective == "step_time":
            return (self.step_time_s(shape, vocab_size, seq_len), loss, shape.n_embd)
        if self.objective == "latency":
            return (self.latency_s(shape, vocab_size), loss, shape.n_embd)
        return (loss, shape.n_embd)

    @property
    def uses_band(self) -> bool:
        """Objectives other than ``loss`` trade loss for hardware cost, so they stay in the band."""
        return self.objective != "loss"

    def to_dict(self) -> dict:
        return asdict(self)


def _bytes(value: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.3g} B"


PROFILES: dict[str, HardwareProfile] = {
    "flat": HardwareProfile(
        name="flat", objective="loss",
        description="no constraint, shape-neutral throughput: the law's loss-optimal shape",
    ),
    "weight-streaming": HardwareProfile(
        name="weight-streaming", objective="deepest",
        description="weights stream one layer at a time (Cerebras): only per-layer weight memory "
                    "binds; deepest shape in the band",
        max_layer_bytes=40e9,  # on-wafer memory for one layer's weights (CS-3 has 44 GB SRAM)
    ),
    "gpu": HardwareProfile(
        name="gpu", objective="step_time",
        description="tensor-parallel GPUs: widths multiple of 128, head size 128, depth divisible "
                    "by pipeline stages; fastest estimated step in the band",
        d_head=128, width_multiple=128, tensor_parallel=2, pipeline_stages=4,
    ),
    "latency": HardwareProfile(
        name="latency", objective="latency",
        description="per-token inference: bytes/bandwidth + fixed cost per layer; lowest "
                    "latency in the band",
    ),
    "memory": HardwareProfile(
        name="memory", objective="loss",
        description="one layer's weights must fit a 64 MiB on-chip buffer: best loss under the cap",
        max_layer_bytes=float(64 * 2**20),
    ),
}

PROFILE_FIELDS = tuple(f.name for f in fields(HardwareProfile))


def profile_from_dict(data: dict, origin: str) -> HardwareProfile:
    """Build a profile from plain data (a parsed file): optional ``base`` (a shipped profile to
    start from), then any of ``PROFILE_FIELDS``. Unknown keys are refused."""
    if not isinstance(data, dict):
        raise CpPlanError(f"hardware profile {origin}: expected a table of fields, got {type(data).__name__}")
    data = dict(data)
    if set(data) == {"hardware"} and isinstance(data["hardware"], dict):
        data = dict(data["hardware"])  # allow a [hardware] table
    unknown = sorted(set(data) - set(PROFILE_FIELDS) - {"base"})
    if unknown:
        raise CpPlanError(
            f"hardware profile {origin}: unknown key(s) {', '.join(unknown)}; allowed: base, "
            f"{', '.join(PROFILE_FIELDS)}"
        )
    base_name = data.pop("base", None)
    if base_name is not None:
        if base_name not in PROFILES:
            raise CpPlanError(
                f"hardware profile {origin}: base={base_name!r} is not a shipped profile; use one "
                f"of {', '.join(PROFILES)}"
            )
        base = PROFILES[base_name]
        data.setdefault("name", Path(origin).stem)
        data.setdefault("description", f"{base.description} (from {origin})")
        return replace(base, **data)
    if "objective" not in data:
        raise CpPlanError(
            f"hardware profile {origin}: needs objective ({', '.join(OBJECTIVES)}) or "
            f"base ({', '.join(PROFILES)})"
        )
    data.setdefault("name", Path(origin).stem)
    return HardwareProfile(**data)


def load_profile(spec: str) -> HardwareProfile:
    """A shipped profile by name, or a user profile from a ``.toml`` or ``.json`` file."""
    if isinstance(spec, HardwareProfile):
        return spec
    if spec in PROFILES:
        return PROFILES[spec]
    path = Path(spec)
    looks_like_file = path.suffix.lower() in (".toml", ".json") or "/" in spec or "\\" in spec
    if not looks_like_file:
        raise CpPlanError(
            f"unknown hardware profile {spec!r}; use one of {', '.join(PROFILES)} "
            "or a .toml/.json profile file (e.g. --hardware ./mine.toml)"
        )
    if not path.is_file():
        raise CpPlanError(
            f"hardware profile file {spec} does not exist; give an existing .toml/.json file "
            f"or one of {', '.join(PROFILES)}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CpPlanError(f"hardware profile file {spec} is not UTF-8 text (byte {exc.object[exc.start]:#x} at "
                          f"offset {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise CpPlanError(f"hardware profile file {spec} cannot be read: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except RecursionError:
        raise CpPlanError(f"hardware profile file {spec} is nested too deeply to be a profile; a profile is one "
                          "table of fields (planner/hardware.py)") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and TOMLDecodeError
        raise CpPlanError(f"hardware profile file {spec} cannot be parsed: {exc}; fix its syntax") from None
    try:
        return profile_from_dict(data, str(spec))
    except TypeError as exc:  # e.g. a wrong type that dataclass init rejects
        raise CpPlanError(f"hardware profile file {spec}: {exc}") from exc
