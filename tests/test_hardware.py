"""Hardware profiles: constraints, cost models, and user profile files."""

import json
import re
from pathlib import Path

import pytest

from planner.errors import CpPlanError
from planner.hardware import PROFILE_FIELDS, PROFILES, HardwareProfile, load_profile
from planner.shapes import make_shape


def test_shipped_profiles_exist_with_their_objectives():
    assert {n: p.objective for n, p in PROFILES.items()} == {
        "flat": "loss", "weight-streaming": "deepest", "gpu": "step_time", "latency": "latency",
        "memory": "loss",
    }
    gpu = PROFILES["gpu"]
    assert gpu.d_head == 128 and gpu.width_step % 128 == 0 and gpu.pipeline_stages > 1


def test_gpu_constraints_name_the_violation():
    gpu = PROFILES["gpu"]
    assert gpu.violations(make_shape(2048, 32, 128)) == []
    bad = gpu.violations(make_shape(1984, 30, 64))
    assert any("head size 64" in v for v in bad)
    assert any("not divisible by 4 pipeline stages" in v for v in bad)
    # n_head must split evenly over tensor-parallel ranks: 128·3 = 384 has 3 heads, tp = 2.
    assert any("multiple of 256" in v for v in gpu.violations(make_shape(384, 8, 128)))


def test_gpu_step_time_favours_width_at_fixed_params():
    gpu = PROFILES["gpu"]
    # ≈1.5e9 non-embedding params at three N:L; wider and shallower must be faster.
    shapes = [make_shape(1024, 120, 128), make_shape(2048, 28, 128), make_shape(3072, 12, 128)]
    times = [gpu.step_time_s(s, 50257, 2048) for s in shapes]
    assert times[0] > times[1] > times[2]


def test_gpu_allreduce_time_per_layer_grows_linearly_with_width():
    gpu = PROFILES["gpu"]
    no_link = HardwareProfile(**{**gpu.to_dict(), "name": "x", "link_bytes_per_s": 1e30})
    def comm_share(n, l):
        s = make_shape(n, l, 128)
        return (gpu.step_time_s(s, 256, 64) - no_link.step_time_s(s, 256, 64)) / l
    # Per-layer all-reduce time grows ∝ N while per-layer compute grows ∝ N², so comm/compute ∝ 1/N.
    assert comm_share(2048, 8) / comm_share(1024, 8) == pytest.approx(2.0, rel=1e-6)


def test_latency_grows_with_depth_at_fixed_params():
    lat = PROFILES["latency"]
    deep, shallow = make_shape(832, 180), make_shape(2176, 26)
    assert abs(deep.n_params / shallow.n_params - 1) < 0.05
    assert lat.latency_s(deep, 50257) > lat.latency_s(shallow, 50257)


def test_memory_cap_and_weight_streaming_neutrality():
    mem = PROFILES["memory"]
    wide, narrow = make_shape(2048, 28), make_shape(1024, 120)
    assert any("exceed" in v for v in mem.violations(wide))
    assert mem.violations(narrow) == []
    ws = PROFILES["weight-streaming"]
    assert ws.violations(wide) == [] and ws.violations(narrow) == []
    assert ws.score(narrow, 3.0, 50257, 2048) < ws.score(wide, 2.9, 50257, 2048)  # deeper wins


def test_unknown_profile_names_allowed_ones():
    with pytest.raises(CpPlanError, match=r"unknown hardware profile 'tpu'; use one of flat, "
                                          r"weight-streaming, gpu, latency, memory"):
        load_profile("tpu")
    with pytest.raises(CpPlanError, match=r"mine\.toml does not exist"):
        load_profile("./mine.toml")


def test_toml_profile_from_base(tmp_path):
    f = tmp_path / "cluster.toml"
    f.write_text('base = "gpu"\npipeline_stages = 8\ntensor_parallel = 4\nmax_layer_bytes = 5e8\n')
    p = load_profile(str(f))
    assert p.name == "cluster" and p.objective == "step_time"
    assert p.pipeline_stages == 8 and p.width_step == 512 and p.max_layer_bytes == 5e8
    assert any("pipeline" in v for v in p.violations(make_shape(2048, 12, 128)))


def test_json_profile_full_and_table_form(tmp_path):
    f = tmp_path / "chip.json"
    f.write_text(json.dumps({"hardware": {"name": "chip", "objective": "latency", "d_head": 128,
                                          "width_multiple": 256, "layer_latency_s": 5e-5}}))
    p = load_profile(str(f))
    assert (p.name, p.objective, p.width_step, p.layer_latency_s) == ("chip", "latency", 256, 5e-5)


@pytest.mark.parametrize("text, match", [
    ('base = "gpu"\npipline_stages = 8\n', r"unknown key\(s\) pipline_stages; allowed: base, name"),
    ('name = "x"\n', r"needs objective"),
    ('objective = "fastest"\n', r"objective='fastest' is not one of deepest, step_time"),
    ('base = "gpu"\npipeline_stages = 0\n', r"pipeline_stages=0 must be a positive integer"),
    ('base = "tpu"\n', r"base='tpu' is not a shipped profile"),
    ('base = "gpu"\npipeline_stages = \n', r"cannot be parsed"),
])
def test_bad_profile_files(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(CpPlanError, match=match):
        load_profile(str(f))


def test_every_profile_field_is_documented_for_users():
    """A user profile may set any field of HardwareProfile: each one must be listed in the README's
    hardware section and explained by a comment where the dataclass declares it (a new field
    added without either fails here)."""
    import inspect

    from planner.hardware import HardwareProfile

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Hardware profiles"):]
    section = section[:section.index("\n## ", 5)]
    source = inspect.getsource(HardwareProfile)
    user_fields = [f for f in PROFILE_FIELDS if f not in ("name", "description")]
    missing = [f for f in user_fields if f"`{f}`" not in section]
    assert not missing, f"not in the README's hardware section: {missing}"
    undocumented = [f for f in user_fields if not re.search(rf"^    {f}: [^\n]*#", source, re.M)]
    assert not undocumented, f"no comment where HardwareProfile declares: {undocumented}"
