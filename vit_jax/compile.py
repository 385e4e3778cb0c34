"""Compile the real training step for TPU slices and GPUs this machine does not have.

    python -m vit_jax.compile --config=configs/vit_pretrain.py:model=ViT-H_14,dataset=jft \\
        --target=tpu-v3-128 --fsdp=16
    python -m vit_jax.compile --config=configs/vit_pretrain.py:model=ViT-B_16 \\
        --target=h100x8 --config.batch_size=2048 --dtype=bfloat16 --remat

XLA compiles ahead of time for a device *description* (vit_jax.targets: libtpu's
TPU compiler and the CUDA plugin's GPU compiler run on a CPU; `make compilers`
installs them). The step is the trainer's own: `vit_jax.step.build_trainer` with
the config, its sharding rules, its donation, over a mesh of the target's
devices, with every input a `jax.ShapeDtypeStruct` carrying its sharding, so
nothing is allocated. A program that compiles for targets calls
`vit_jax.targets.prepare_offline_compilers()` first, as `main` does.

What it reports (printed, and as JSON with --out), per device:
  memory      the compiler's buffer assignment (arguments, outputs, temporaries,
              donated/aliased, code; vit_jax.aot.device_memory) against the
              device's HBM; a program that does not fit is `fits: false` with
              the compiler's RESOURCE_EXHAUSTED numbers.
  flops       XLA's cost analysis of the partitioned step (remat recompute
              included), beside the model FLOPs (3 × forward, App. Table 6's rule)
              and their ratio, checked (`flops_check`): XLA costs a while loop's
              body once, so a step that accumulates gradients over k micro-batches
              (a lax.scan) has its FLOPs and step time multiplied by k here (the
              numbers XLA gave are kept under `cost_analysis_as_given`), and a
              ratio far from 1 (4/3 under full remat) is reported as off.
  step time   TPU only: XLA's cost model (`optimal_seconds`), a lower bound and
              not a measurement; the MFU it implies is therefore an upper bound.
              GPU compiles give no cost model: their step times wait for a real
              GPU (experiments/bench/gpu.sh).
  device-days the config's total steps at that step time (experiments/pod_plan.py
              sets them beside the paper's Table 2 TPUv3-core-days).
  collectives all-gather / reduce-scatter / all-reduce / all-to-all /
              collective-permute counts and bytes in the compiled HLO (static:
              an op inside a loop counts once).
  kernels     the custom calls of the compiled step (cuDNN's fused attention,
              cuBLAS, any CPU kernel).
"""

import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags, logging
from ml_collections import config_flags

from vit_jax import aot, errors, sharding
from vit_jax.config import check_config, resolve_total_steps
from vit_jax.models import costs, get_model, model_options
from vit_jax.objectives import OBJECTIVES
from vit_jax.step import build_trainer
from vit_jax.targets import Target, get_target, prepare_offline_compilers

GiB = 2**30
SECONDS_PER_DAY = 86400
# XLA:GPU without a GPU: no autotuning (it would run kernels), and cuBLAS
# instead of Triton GEMMs, whose tiling search fails without a device
# ("INTERNAL: Couldn't find output tile sizes").
GPU_COMPILER_OPTIONS = {"xla_gpu_enable_triton_gemm": False, "xla_gpu_autotune_level": 0}


def _set_model_option(config, name: str, value) -> None:
    if name not in model_options(config.model_name):
        raise errors.UserError(f"{config.model_name} has no option {name!r}.")
    with config.unlocked():
        config.model[name] = value


def apply_mesh_options(config, *, fsdp: int | None = None, model_axis: int | None = None,
                       remat: bool | str | None = None, dtype: str | None = None,
                       accum_steps: int | None = None, adam_mu_dtype: str | None = None,
                       scan: bool | None = None):  # fmt: skip
    """A copy of config with the mesh (data × fsdp [× model]), remat (True, False
    or a policy of vit_jax.models.vit.REMAT_POLICIES), the compute dtype, the
    gradient accumulation, Adam's first-moment dtype and the scan over blocks
    set (model options a config may not list, so --config.model.* cannot add
    them); None keeps the config's."""
    config = config.copy_and_resolve_references()
    if fsdp is not None or model_axis is not None:
        axes = dict(config.mesh)
        mesh = [("data", -1), ("fsdp", fsdp if fsdp is not None else axes.get("fsdp", 1))]
        model = model_axis if model_axis is not None else axes.get(sharding.MODEL_AXIS, 1)
        if model > 1:
            mesh.append((sharding.MODEL_AXIS, model))
            if not any(p for p, _ in config.sharding_rules if "Dense_0/kernel" in p):
                config.sharding_rules = sharding.TENSOR_PARALLEL_RULES + tuple(
                    config.sharding_rules
                )
        config.mesh = tuple(mesh)
    if isinstance(remat, str):
        _set_model_option(config, "remat_policy", remat)
        remat = True
    # remat=False on a model without the option (the ResNets) is what it does.
    if remat or (remat is not None and "remat" in model_options(config.model_name)):
        _set_model_option(config, "remat", remat)
    if scan is not None:
        _set_model_option(config, "scan", scan)
    if dtype is not None:
        _set_model_option(config, "dtype", jnp.dtype(dtype).name)
    with config.unlocked():
        if accum_steps is not None:
            config.accum_steps = accum_steps
        if adam_mu_dtype is not None:
            config.adam_mu_dtype = adam_mu_dtype
    return config


def run_length(config) -> tuple[int, int, tuple[int, int, int]]:
    """(num_classes, total_steps, image_shape) from the dataset registry (its
    split sizes are data: nothing is read)."""
    from vit_jax import data  # Imported here: it pulls in TensorFlow.

    info = data.get_dataset_info(config.dataset, config.data_dir)
    if config.total_steps > 0:
        steps = int(config.total_steps)
    else:
        num_train = data.num_examples(config.dataset, config.train_split, config.data_dir)
        steps = resolve_total_steps(config, num_train)
    channels = info.image_shape[-1] if info.image_shape else 3
    return info.num_classes, steps, (config.image_size, config.image_size, channels)


_FORWARD_FLOPS: dict = {}


def forward_flops(config, num_classes: int) -> float:
    """Model FLOPs of one image's forward pass (XLA's count on its own
    attention: a custom call counts no FLOPs), once per distinct model."""
    key = (config.model_name, repr(sorted(config.model.items())), config.objective,
           config.image_size, num_classes)  # fmt: skip
    if key not in _FORWARD_FLOPS:
        # An objective without labels (masked patch prediction) is measured on
        # its encoder: its forward needs a corruption rng, and its per-patch
        # output layer adds under 1%.
        head = num_classes if OBJECTIVES[config.objective].uses_labels else None
        model = get_model(config.model_name, head, **config.model)
        _FORWARD_FLOPS[key] = costs.forward_flops(model, config.image_size)
    return _FORWARD_FLOPS[key]


def compile_train_step(config, target: Target | str, *, model_flops: bool = True) -> dict:
    """Compiles the trainer's step of `config` for `target`; the report as a dict
    (see the module docstring). Raises only for errors other than memory."""
    target = get_target(target) if isinstance(target, str) else target
    check_config(config)
    num_classes, total_steps, image_shape = run_length(config)
    mesh = sharding.make_mesh(config.mesh, target.devices)
    sharding.check_batch_size(config.batch_size, mesh)
    sharding.check_batch_size(config.batch_size // config.accum_steps, mesh, "micro-batch size")

    trainer = build_trainer(config, num_classes, image_shape, mesh, total_steps=total_steps)
    state = trainer.abstract_sharded_state()
    batch = OBJECTIVES[config.objective].abstract_batch(
        config.batch_size, image_shape, num_classes, sharding.batch_sharding(mesh)
    )
    report = {
        "target": target.name,
        "topology": target.topology,
        "platform": target.platform,
        "device_kind": target.device_kind,
        "num_devices": target.num_devices,
        "num_hosts": target.num_hosts,
        "config": {
            "model_name": config.model_name,
            "model": {k: str(v) for k, v in config.model.items()},
            "dataset": config.dataset,
            "objective": config.objective,
            "image_size": config.image_size,
            "batch_size": config.batch_size,
            "accum_steps": config.accum_steps,
            "adam_mu_dtype": config.adam_mu_dtype,
            "total_steps": total_steps,
            "total_epochs": config.total_epochs,
            "attention": config.attention,
            "sharding_rules": [
                [p, s if isinstance(s, str) else list(s)] for p, s in config.sharding_rules
            ],  # fmt: skip
        },
        "attention": trainer.attention,
        "mesh": dict(mesh.shape),
        "hbm_bytes_per_device": target.hbm_bytes_per_device,
    }
    options = GPU_COMPILER_OPTIONS if target.platform == "gpu" else None
    start = time.perf_counter()
    lowered = trainer.train_step.lower(state, batch)
    report["lower_seconds"] = round(time.perf_counter() - start, 2)
    try:
        compiled = lowered.compile(compiler_options=options)
    except Exception as error:  # XLA raises JaxRuntimeError; match the status, not the type.
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        report["compile_seconds"] = round(time.perf_counter() - start, 2)
        report["fits"] = False
        report["memory"] = aot.resource_exhausted(str(error))
        return report
    report["compile_seconds"] = round(time.perf_counter() - start, 2)
    report.update(_analyse(compiled, target))
    if model_flops:
        forward = forward_flops(config, num_classes)
        per_device = 3 * forward * config.batch_size / target.num_devices
        report["model_flops_per_device"] = per_device
    _count_loop_trips(report, config.accum_steps)
    _check_flops(report)
    _step_time(report, target, total_steps)
    return report


# XLA FLOPs / model FLOPs of a consistent report: the backward pass costs about
# twice the forward (App. Table 6's 3×), plus element-wise work, the forward
# recomputed under remat (up to 4/3) and whatever the compiler rematerialises
# on its own when memory is tight (0.98-1.30 across the pod plan's compiles).
FLOPS_RATIO_RANGE = (0.9, 1.45)


def _count_loop_trips(report: dict, accum_steps: int) -> None:
    """XLA's cost analysis counts a while loop's body once: the accumulation
    loop's k micro-batches cost k times what it reports. The once-per-step
    optimizer update outside the loop is multiplied too (element-wise, under
    1% of a ViT step)."""
    if accum_steps == 1 or "xla_flops_per_device" not in report:
        return
    report["cost_analysis_as_given"] = {
        key: report[key]
        for key in ("xla_flops_per_device", "bytes_accessed_per_device", "cost_model_step_seconds")
        if key in report
    }
    for key in report["cost_analysis_as_given"]:
        report[key] *= accum_steps
    report["loop_trip_count"] = accum_steps


def _check_flops(report: dict) -> None:
    """The compiled step's FLOPs against 3 × forward × batch: a ratio outside
    FLOPS_RATIO_RANGE means the cost analysis missed work (a loop it counted
    once) or counts work the model does not have, and the report says so."""
    if "xla_flops_per_device" not in report or not report.get("model_flops_per_device"):
        return
    ratio = report["xla_flops_per_device"] / report["model_flops_per_device"]
    report["flops_ratio"] = ratio
    low, high = FLOPS_RATIO_RANGE
    report["flops_check"] = (
        "ok"
        if low <= ratio <= high
        else f"off: XLA counts {ratio:.2f} x the model's 3 x forward FLOPs (1 to 4/3 expected): "
        "a loop counted once, or work the model does not have"
    )


def _analyse(compiled, target: Target) -> dict:
    memory = aot.device_memory(compiled)
    memory["headroom_bytes"] = target.hbm_bytes_per_device - memory["total_bytes"]
    out = {
        "fits": memory["total_bytes"] <= target.hbm_bytes_per_device,
        "fits_basis": (
            "compiled: the TPU compiler checks its buffer assignment against HBM"
            if target.platform == "tpu"
            else "the buffer assignment against device_memory_size (XLA:GPU does not check)"
        ),
        "memory": memory,
    }
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    if analysis:
        out["xla_flops_per_device"] = float(analysis.get("flops", 0.0))
        out["bytes_accessed_per_device"] = float(analysis.get("bytes accessed", 0.0))
        seconds = float(analysis.get("optimal_seconds", -1.0))
        if seconds > 0:
            out["cost_model_step_seconds"] = seconds
        else:  # libtpu 0.0.42.1 answers -16/-17 for v4 and v5e: no model there.
            out["cost_model_missing"] = f"optimal_seconds = {seconds:g}"
    text = compiled.as_text()
    out["collectives"] = aot.collectives(text)
    out["custom_calls"] = aot.custom_calls(text)
    out["cudnn_attention"] = {
        "forward": any(k.startswith("__cudnn$fmha") and "Backward" not in k
                       for k in out["custom_calls"]),
        "backward": any(k.startswith("__cudnn$fmha") and "Backward" in k
                        for k in out["custom_calls"]),
    }  # fmt: skip
    return out


def _step_time(report: dict, target: Target, total_steps: int) -> None:
    report["peak_flops_per_device"] = peak = target.peak_flops_per_device
    seconds = report.get("cost_model_step_seconds")
    if not seconds:
        missing = report.get("cost_model_missing", "none on GPU")
        report["step_time_note"] = (
            f"no cost model for this target ({missing}): step time and MFU wait for a real device"
        )
        return
    flops = report.get("model_flops_per_device") or report.get("xla_flops_per_device", 0.0)
    report["mfu_bound"] = flops / (seconds * peak) if peak else None
    report["device_days_bound"] = total_steps * seconds * report["num_devices"] / SECONDS_PER_DAY


# ---------------------------------------------------------------- printing


def _gib(n) -> str:
    return f"{n / GiB:.2f} GiB"


def format_report(report: dict) -> str:
    cfg = report["config"]
    lines = [
        f"{cfg['model_name']} {cfg['dataset']} batch {cfg['batch_size']} at "
        f"{cfg['image_size']} px on {report['target']} ({report['topology']}: "
        f"{report['num_devices']} x {report['device_kind']}, {report['num_hosts']} host(s))",
        f"  mesh        {report['mesh']}  remat {cfg['model'].get('remat', 'False')} "
        f"({cfg['model'].get('remat_policy', 'full')})  accum {cfg['accum_steps']}  "
        f"attention: {report['attention']}",
        f"  compile     {report['compile_seconds']:.1f} s (lowering "
        f"{report['lower_seconds']:.1f} s)",
    ]
    memory = report["memory"]
    hbm = report["hbm_bytes_per_device"]
    if not report["fits"] and "total_bytes" not in memory:
        lines.append(
            f"  memory      DOES NOT FIT: needs {_gib(memory.get('required_bytes', 0))} "
            f"({memory.get('required_what', '?')}), available "
            f"{_gib(memory.get('available_bytes', hbm))}; compiler: {memory['compiler_message']}"
        )
        return "\n".join(lines)
    lines.append(
        f"  memory      {_gib(memory['total_bytes'])} per device of {_gib(hbm)} "
        f"({'fits' if report['fits'] else 'DOES NOT FIT'}, headroom "
        f"{_gib(memory['headroom_bytes'])}): arguments {_gib(memory['arguments_bytes'])}, "
        f"temporaries {_gib(memory['temporaries_bytes'])}, outputs "
        f"{_gib(memory['outputs_bytes'])}, donated/aliased {_gib(memory['aliased_bytes'])} "
        "(compiler's buffer assignment)"
    )
    if "xla_flops_per_device" in report:
        lines.append(
            f"  flops       {report['xla_flops_per_device']:.3e} per device per step (XLA), "
            f"model {report.get('model_flops_per_device', float('nan')):.3e}"
            + (f" (ratio {report['flops_ratio']:.2f}: {report['flops_check']})"
               if "flops_ratio" in report else "")
            + (f"; the accumulation loop's {report['loop_trip_count']} trips counted"
               if "loop_trip_count" in report else "")
        )  # fmt: skip
    elif "model_flops_per_device" in report:
        lines.append(f"  flops       model {report['model_flops_per_device']:.3e} per device")
    if "cost_model_step_seconds" in report:
        lines.append(
            f"  step time   {report['cost_model_step_seconds']:.3f} s (XLA's cost model: a "
            f"bound, not a measurement), MFU <= {100 * report['mfu_bound']:.0f}%, "
            f"{report['config']['total_steps']:,} steps -> >= "
            f"{report['device_days_bound']:,.0f} device-days"
        )
    else:
        lines.append(f"  step time   {report['step_time_note']}")
    coll = ", ".join(
        f"{op} {c['count']} ({c['bytes'] / 2**20:,.0f} MiB)"
        for op, c in report["collectives"].items()
        if c["count"]
    )
    lines.append(f"  collectives {coll or 'none'}")
    calls = ", ".join(f"{k} x{v}" for k, v in sorted(report["custom_calls"].items()))
    lines.append(f"  kernels     {calls or 'none'}")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file (configs/*.py[:arg]).")
_TARGET = flags.DEFINE_string("target", "tpu-v3-32", "See get_target: tpu-v3-128, h100x8, ...")
_FSDP = flags.DEFINE_integer("fsdp", None, "Mesh = data (the rest) x fsdp N; default: config.mesh.")
_MODEL_AXIS = flags.DEFINE_integer(
    "model_axis", None, "A 'model' mesh axis of this size with the tensor-parallel rules."
)
_REMAT = flags.DEFINE_bool("remat", None, "Set config.model.remat; default: the config's.")
_REMAT_POLICY = flags.DEFINE_string(
    "remat_policy", None, "Remat with this policy (full, dots, dots_no_batch); implies --remat."
)
_SCAN = flags.DEFINE_bool("scan", None, "Set config.model.scan (the blocks as one lax.scan).")
_DTYPE = flags.DEFINE_string("dtype", None, "Set config.model.dtype (e.g. bfloat16).")
_OUT = flags.DEFINE_string("out", None, "Write the report as JSON here.")


@errors.cli
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    prepare_offline_compilers()
    config = apply_mesh_options(
        _CONFIG.value,
        fsdp=_FSDP.value,
        model_axis=_MODEL_AXIS.value,
        remat=_REMAT_POLICY.value or _REMAT.value,
        scan=_SCAN.value,
        dtype=_DTYPE.value,
    )
    target = get_target(_TARGET.value)
    logging.info("Compiling for %s (%d devices)...", target.name, target.num_devices)
    report = compile_train_step(config, target)
    report["command"] = " ".join(["python -m vit_jax.compile", *sys.argv[1:]])
    report["jax_version"] = jax.__version__
    print(format_report(report), flush=True)
    if _OUT.value:
        pathlib.Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(_OUT.value).write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"Wrote {_OUT.value}.")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    errors.run_absl_app(main)  # --help exits 0.
