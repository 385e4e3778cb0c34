"""vit_jax.compile: the trainer's real step compiled for TPU slices and GPUs
this machine does not have (libtpu's and the CUDA plugin's compilers, from
requirements-compile.txt in .venv/compilers), on tiny models."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import ml_collections
import pytest

import vit_jax.compile as vc
from vit_jax import aot, sharding, targets
from vit_jax.config import default_config
from vit_jax.kernels import backends
from vit_jax.models.attention import dot_product_attention

# Hosts: v3:4x4 is 32 TensorCores on 4 hosts, v5e:4x4 16 chips on 4 hosts.
TPU_TARGETS = ("tpu-v3:4x4", "tpu-v5e:4x4")


@pytest.fixture(scope="module", autouse=True)
def offline_compilers():
    """Once per module, whenever this process's jax started its CPU backend
    (other tests may have started it, as a notebook's cells would)."""
    targets.prepare_offline_compilers()


def _run_python(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_importing_changes_neither_environment_nor_path():
    """A fresh process: importing vit_jax.compile (and so the targets) leaves
    os.environ, sys.path and jax's platforms as they were."""
    out = _run_python(
        "import json, os, sys\n"
        "before = (dict(os.environ), list(sys.path))\n"
        "import vit_jax.compile, jax\n"
        "print(json.dumps([before == (dict(os.environ), list(sys.path)), "
        "jax.config.jax_platforms]))\n"
    )
    assert json.loads(out.splitlines()[-1]) == [True, None]


def test_preparing_after_a_backend_started_still_describes_targets():
    """prepare_offline_compilers after jax.devices(): the running CPU backend
    stays, and TPUs and GPUs are still described."""
    out = _run_python(
        "import jax\n"
        "from vit_jax import targets\n"
        "platform = jax.devices()[0].platform\n"
        "targets.prepare_offline_compilers()\n"
        "tpu, gpu = targets.get_target('tpu-v5e:2x2'), targets.get_target('h100x2')\n"
        "print(platform, jax.devices()[0].platform, tpu.num_devices, gpu.num_devices)\n"
    )
    assert out.split()[-4:] == ["cpu", "cpu", "4", "2"]


def tiny_config(**changes) -> ml_collections.ConfigDict:
    """A one-block ViT at 32 px (17 tokens: odd, like the paper's 197), batch 64:
    compiles in seconds. Widths are multiples of 128 so that TPU tiling pads
    almost nothing and FSDP's shards are exact fractions."""
    config = default_config()
    config.model_name = "testing"
    config.model = ml_collections.ConfigDict(
        dict(hidden_size=512, mlp_dim=2048, num_heads=4, num_layers=1, patch_size=(8, 8))
    )
    config.dataset = "cifar10"
    config.image_size = 32
    config.batch_size = 64
    config.total_steps = 10
    for key, value in changes.items():
        config[key] = value
    return config


@pytest.fixture(scope="module")
def reports():
    """Each (target, layout) compiled once for the module's tests."""
    cache = {}

    def get(target, layout, **changes):
        key = (target, layout, tuple(sorted(changes.items())))
        if key not in cache:
            mesh = {
                "dp": (("data", -1), ("fsdp", 1)),
                "fsdp": (("data", 2), ("fsdp", -1)),
                "tp": (("data", -1), ("fsdp", 1), ("model", 4)),
            }[layout]
            config = tiny_config(mesh=mesh, **changes)
            if layout == "tp":
                config.sharding_rules = sharding.TENSOR_PARALLEL_RULES + ((".*", "fsdp"),)
            cache[key] = vc.compile_train_step(config, target, model_flops=False)
        return cache[key]

    return get


def test_targets_by_name():
    v3 = targets.get_target("tpu-v3-32")
    assert (v3.topology, v3.num_devices, v3.num_hosts) == ("v3:4x4", 32, 4)
    assert v3.peak_flops_per_device == 61.5e12 and v3.hbm_bytes_per_device == 16 * targets.GiB
    assert targets.get_target("tpu-v4-16").topology == "v4:2x2x2"
    assert targets.get_target("tpu-v5e-16").topology == "v5e:4x4"
    assert targets.torus_shape(64, 3) == (4, 4, 4) and targets.torus_shape(16, 3) == (2, 2, 4)
    h100 = targets.get_target("h100x16@2")
    assert (h100.num_devices, h100.num_hosts, h100.topology) == (16, 2, "1x2x8")
    assert h100.hbm_bytes_per_device == 84929347584  # compile_targets/h100.txtpb
    with pytest.raises(ValueError, match="Unknown target"):
        targets.get_target("tpu-v9-8")


@pytest.mark.parametrize("target", TPU_TARGETS)
def test_data_parallel_step_gathers_no_parameters(reports, target):
    report = reports(target, "dp")
    assert report["fits"] and report["num_hosts"] == 4
    assert report["mesh"]["data"] == report["num_devices"]
    # Replicated parameters: gradients are all-reduced, nothing is gathered.
    assert report["collectives"]["all-gather"]["count"] == 0, report["collectives"]
    assert report["collectives"]["all-reduce"]["count"] >= 1
    assert report["xla_flops_per_device"] > 0
    if target.startswith("tpu-v3"):  # libtpu's cost model covers v3 (and v5p), not v5e.
        assert report["cost_model_step_seconds"] > 0 and 0 < report["mfu_bound"] <= 1
    assert report["memory"]["aliased_bytes"] > 0  # The state is donated.


@pytest.mark.parametrize("target", TPU_TARGETS)
def test_fsdp_shards_the_state(reports, target):
    dp, fsdp = reports(target, "dp"), reports(target, "fsdp")
    shards = fsdp["mesh"]["fsdp"]
    assert shards == fsdp["num_devices"] // 2
    # Parameters and Adam's moments are split over fsdp: the state (the donated
    # arguments) shrinks to 1/shards, up to biases' tile padding.
    ratio = fsdp["memory"]["aliased_bytes"] / dp["memory"]["aliased_bytes"]
    assert 1 / shards <= ratio < 1.25 / shards, (ratio, shards)
    assert fsdp["collectives"]["all-gather"]["count"] > 0  # Parameters gathered per use.


def test_tensor_parallel_rules_compile(reports):
    target = "tpu-v5e:4x4"
    dp, tp = reports(target, "dp"), reports(target, "tp")
    assert tp["fits"] and tp["mesh"]["model"] == 4
    assert tp["memory"]["arguments_bytes"] < dp["memory"]["arguments_bytes"]
    # Megatron layout: activations are all-reduced over 'model' inside the blocks.
    assert tp["collectives"]["all-reduce"]["count"] > dp["collectives"]["all-reduce"]["count"]


def test_auto_attention_resolves_from_the_mesh(reports):
    """A TPU mesh in a CPU process takes XLA's attention, never the CPU kernel."""
    target = targets.get_target("tpu-v3:4x4")
    mesh = sharding.make_mesh((("data", -1),), target.devices)
    fn, why = backends.choose_attention("auto", mesh, jnp.float32)
    assert fn is dot_product_attention and "tpu" in why
    report = reports("tpu-v3:4x4", "dp")
    assert not any("cpu" in call for call in report["custom_calls"]), report["custom_calls"]
    with pytest.raises(ValueError, match="one CPU device"):
        backends.choose_attention("cpu", mesh, jnp.float32)


def test_out_of_memory_is_a_report():
    config = tiny_config(batch_size=2**17, image_size=64, mesh=(("data", -1), ("fsdp", 1)))
    report = vc.compile_train_step(config, "tpu-v3:2x2", model_flops=False)
    assert report["fits"] is False
    assert report["memory"]["required_bytes"] > report["memory"]["available_bytes"] > 15 * 2**30
    assert "RESOURCE_EXHAUSTED" in report["memory"]["compiler_message"]


def test_gpu_auto_takes_cudnn_attention_forward_and_backward():
    """bf16 on H100s: 'auto' is cuDNN's fused attention at the ViT's odd token
    count (65), in the training step's forward and backward."""
    config = tiny_config(mesh=(("data", -1), ("fsdp", 1)))
    config.model.dtype = "bfloat16"
    report = vc.compile_train_step(config, "h100x2", model_flops=False)
    assert report["num_devices"] == 2 and report["fits"]
    assert report["cudnn_attention"] == {"forward": True, "backward": True}, report
    assert "cost_model_step_seconds" not in report and "wait" in report["step_time_note"]


def test_gpu_fsdp_keeps_activations_split_by_batch():
    """FSDP on H100s: the head's input dimension is sharded, yet no activation
    (or its gradient) is resharded by the hidden dimension: no all-to-all."""
    config = tiny_config(mesh=(("data", 1), ("fsdp", -1)))
    config.model.dtype = "bfloat16"
    report = vc.compile_train_step(config, "h100x8", model_flops=False)
    assert report["mesh"]["fsdp"] == 8 and report["fits"]
    assert report["collectives"]["all-to-all"]["count"] == 0, report["collectives"]
    assert report["collectives"]["reduce-scatter"]["count"] > 0  # Gradients land sharded.


def test_collectives_parse_hlo_text():
    text = "\n".join(
        [
            "  %all-gather.1 = f32[8,128]{1,0} all-gather(f32[1,128]{1,0} %p), dimensions={0}",
            "  %ags = (bf16[4]{0}, bf16[32]{0}) all-gather-start(bf16[4]{0} %x), dimensions={0}",
            "  ROOT %all-reduce = (f32[10]{0}, s32[]) all-reduce(f32[10]{0} %a, s32[] %b)",
        ]
    )
    found = aot.collectives(text)
    assert found["all-gather"] == {"count": 2, "bytes": 8 * 128 * 4 + 32 * 2}
    assert found["all-reduce"] == {"count": 1, "bytes": 44}
    assert json.dumps(found)


def test_mesh_options_on_a_model_without_remat():
    # The pod plan tries remat=False first on every model, the ResNets included.
    from configs import testing

    config = testing.get_config()
    config.model_name = "BiT-testing"
    assert "remat" not in vc.apply_mesh_options(config, fsdp=2, remat=False).model
    with pytest.raises(ValueError, match="BiT-testing has no option 'remat'"):
        vc.apply_mesh_options(config, remat=True)


def test_accumulation_loop_is_costed_for_every_micro_batch():
    """XLA costs a while loop's body once: the report multiplies the
    accumulation loop's cost by its trip count, so 4 micro-batches of 16 cost
    what one batch of 64 does, and both pass the check against 3 × forward."""
    whole = vc.compile_train_step(tiny_config(mesh=(("data", -1), ("fsdp", 1))), "tpu-v3:2x2")
    accum = vc.compile_train_step(
        tiny_config(mesh=(("data", -1), ("fsdp", 1)), accum_steps=4), "tpu-v3:2x2"
    )
    assert accum["loop_trip_count"] == 4 and "loop_trip_count" not in whole
    given = accum["cost_analysis_as_given"]
    assert accum["xla_flops_per_device"] == 4 * given["xla_flops_per_device"]
    assert accum["cost_model_step_seconds"] == 4 * given["cost_model_step_seconds"]
    # Within 10%: the once-per-step optimizer update, multiplied too, is a
    # large share of this tiny step (under 1% of a ViT-B's).
    assert accum["xla_flops_per_device"] == pytest.approx(whole["xla_flops_per_device"], rel=0.1)
    assert accum["model_flops_per_device"] == whole["model_flops_per_device"]
    assert whole["flops_check"] == accum["flops_check"] == "ok"
