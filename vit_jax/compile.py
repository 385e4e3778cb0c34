"""Compile the real training step for TPU slices and GPUs this machine does not have.

    python -m vit_jax.compile --config=configs/vit_pretrain.py:model=ViT-H_14,dataset=jft \\
        --target=tpu-v3-128 --fsdp=16
    python -m vit_jax.compile --config=configs/vit_pretrain.py:model=ViT-B_16 \\
        --target=h100x8 --config.batch_size=2048 --dtype=bfloat16 --remat

XLA compiles ahead of time for a device *description*
(`jax.experimental.topologies.get_topology_desc`): libtpu's TPU compiler and the
CUDA plugin's GPU compiler run on a CPU (`make compilers` installs them; see
requirements-compile.txt). The step is the trainer's own: `train.build_trainer`
with the config, its sharding rules, its donation, over a mesh of the target's
devices, with every input a `jax.ShapeDtypeStruct` carrying its sharding, so
nothing is allocated.

What it reports (printed, and as JSON with --out), per device:
  memory      the compiler's buffer assignment (arguments, outputs, temporaries,
              donated/aliased) against the device's HBM; a program that does not
              fit is `fits: false` with the compiler's RESOURCE_EXHAUSTED numbers.
  flops       XLA's cost analysis of the partitioned step (remat recompute
              included), beside the model FLOPs (3 × forward, App. Table 6's rule).
  step time   TPU only: XLA's cost model (`optimal_seconds`), a lower bound and
              not a measurement; the MFU it implies is therefore an upper bound.
              GPU compiles give no cost model: their step times wait for a real
              GPU (experiments/bench/gpu.sh).
  device-days the config's total steps at that step time, beside the paper's
              Table 2 TPUv3-core-days where the paper gives them.
  collectives all-gather / reduce-scatter / all-reduce / all-to-all /
              collective-permute counts and bytes in the compiled HLO (static:
              an op inside a loop counts once).
  kernels     the custom calls of the compiled step (cuDNN's fused attention,
              cuBLAS, any CPU kernel).
"""

import collections
import dataclasses
import functools
import json
import math
import os
import pathlib
import re
import sys
import time

# Before jax initialises a backend. The compilers are installed apart from the
# project's environment (`make compilers` → .venv/compilers) so that a plain CPU
# process (`make run`, the tests) never loads libtpu or the CUDA plugin: with
# them in site-packages every jax process pays their start-up, prints their
# warnings, and holds libtpu's one-process lock file (/tmp/libtpu_lockfile).
COMPILERS_DIR = pathlib.Path(
    os.environ.get("VIT_JAX_COMPILERS", pathlib.Path(__file__).parents[1] / ".venv" / "compilers")
)
if COMPILERS_DIR.is_dir() and str(COMPILERS_DIR) not in sys.path:
    sys.path.insert(0, str(COMPILERS_DIR))
_ENVIRONMENT = {
    # The compiling process itself runs on CPU; the targets are descriptions.
    "JAX_PLATFORMS": "cpu",
    # libtpu asks the (absent) TPU VM metadata for these and warns without them.
    "TPU_ACCELERATOR_TYPE": "v3-8",
    "TPU_WORKER_HOSTNAMES": "localhost",
    "TPU_SKIP_MDS_QUERY": "1",
    # libtpu allows one process per machine unless told otherwise; compiling
    # takes no TPU, so parallel compiles (pytest -n 2) may share it.
    "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
    # No CUDA driver here: the plugin's version check would refuse to load.
    "JAX_SKIP_CUDA_CONSTRAINTS_CHECK": "1",
}
for _name, _value in _ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from jax.experimental import topologies  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vit_jax import sharding, train  # noqa: E402
from vit_jax.models import costs, get_model, model_options  # noqa: E402

GiB = 2**30
SECONDS_PER_DAY = 86400
TARGETS_DIR = pathlib.Path(__file__).with_name("compile_targets")
# XLA:GPU without a GPU: no autotuning (it would run kernels), and cuBLAS
# instead of Triton GEMMs, whose tiling search fails without a device
# ("INTERNAL: Couldn't find output tile sizes").
GPU_COMPILER_OPTIONS = {"xla_gpu_enable_triton_gemm": False, "xla_gpu_autotune_level": 0}


@dataclasses.dataclass(frozen=True)
class TpuChip:
    """A TPU generation's per-chip facts (Google Cloud's TPU spec sheets)."""

    kind: str  # As in get_topology_desc's topology names ("v3:4x4").
    peak_bf16_flops: float  # Dense bf16 matmul FLOP/s per chip.
    hbm_bytes: int  # Per chip.
    hbm_bandwidth: float  # Bytes/s per chip.
    cores_in_name: bool  # v3/v4/v5p slices count TensorCores (2 a chip), v5e chips.
    dims: int  # Torus dimensions of its topology names.
    topology_options: tuple = ()  # get_topology_desc keyword arguments.


TPU_CHIPS = {
    "v3": TpuChip("v3", 123e12, 32 * GiB, 900e9, True, 2),
    # v4 runs its two TensorCores as one device ("megacore"), as jax on a v4 VM does.
    "v4": TpuChip("v4", 275e12, 32 * GiB, 1228e9, True, 3, (("chip_config_name", "megacore"),)),
    "v5e": TpuChip("v5e", 197e12, 16 * GiB, 819e9, False, 2),
    "v5p": TpuChip("v5p", 459e12, 95 * GiB, 2765e9, True, 3),
}


@dataclasses.dataclass(frozen=True)
class GpuModel:
    target_file: str  # A GpuTargetConfigProto in text format, in compile_targets/.
    peak_bf16_flops: float  # Dense bf16 tensor-core FLOP/s (NVIDIA's datasheets).
    gpus_per_host: int = 8  # An HGX/DGX board.


GPU_MODELS = {
    "h100": GpuModel("h100.txtpb", 989e12),
    "h200": GpuModel("h200.txtpb", 989e12),
    "a100": GpuModel("a100_80gb.txtpb", 312e12),
    "a100-80gb": GpuModel("a100_80gb.txtpb", 312e12),
    "a100-40gb": GpuModel("a100_40gb.txtpb", 312e12),
}

# Table 2's pre-training cost, TPUv3-core-days, for the runs it reports:
# (model, dataset, epochs) → core-days.
PAPER_CORE_DAYS = {
    ("ViT-H_14", "jft", 14): 2500,
    ("ViT-L_16", "jft", 14): 680,
    ("ViT-L_16", "imagenet21k", 90): 230,
}


@dataclasses.dataclass(frozen=True)
class Target:
    """A set of devices to compile for, without having them."""

    name: str
    platform: str  # 'tpu' | 'gpu'
    device_kind: str
    num_devices: int
    num_hosts: int
    peak_flops_per_device: float
    hbm_bytes_per_device: int
    topology: str  # What get_topology_desc was given.
    _devices: tuple = dataclasses.field(repr=False, compare=False, default=())

    @property
    def devices(self) -> list:
        return list(self._devices)


def _torus_shape(chips: int, dims: int) -> tuple[int, ...]:
    """The standard slice shape of `chips` chips: the smallest dimension doubled
    first, ties to the first while a dimension is 1, else to the last (v3-32 =
    4x4, v5e-8 = 2x4, v4-16 = 2x2x2, v4-32 = 2x2x4, v4-128 = 4x4x4)."""
    if chips < 1 or chips & (chips - 1):
        raise ValueError(f"TPU slices have a power-of-two chip count, not {chips}.")
    shape = [1] * dims
    while math.prod(shape) < chips:
        smallest = min(shape)
        ties = [i for i, size in enumerate(shape) if size == smallest]
        shape[ties[0] if smallest == 1 else ties[-1]] *= 2
    return tuple(shape)


@functools.cache
def _tpu_devices(kind: str, topology: str, options: tuple) -> tuple:
    try:
        desc = topologies.get_topology_desc(
            topology_name=f"{kind}:{topology}", platform="tpu", **dict(options)
        )
    except RuntimeError as error:
        if "not installed" in str(error):
            raise RuntimeError(
                "The TPU compiler (libtpu) is not installed: run `make compilers` "
                "(pip install --target .venv/compilers -r requirements-compile.txt)."
            ) from error
        raise
    return tuple(desc.devices)


def _register_cuda_plugin() -> None:
    """jax registers plugins once, at its first backend; when that came before
    the compilers were on sys.path (a test process), register the CUDA one now."""
    from jax._src import xla_bridge  # The registry has no public query.

    xla_bridge._discover_and_register_pjrt_plugins()
    if "cuda" not in xla_bridge._topology_factories:
        try:
            from jax_plugins import xla_cuda12
        except ImportError:
            return  # _gpu_devices says how to install it.
        xla_cuda12.initialize()
    # jax looks up cuDNN's version helpers once, when it is imported; the fused
    # attention refuses to trace ("cuDNN is not detected") if that was before.
    from jax._src import lib
    from jax._src.cudnn import fused_attention_stablehlo

    if lib.cuda_versions is None:
        import jax_cuda12_plugin._versions as versions

        lib.cuda_versions = fused_attention_stablehlo.cuda_versions = versions


@functools.cache
def _gpu_devices(target_text: str, topology: str) -> tuple:
    _register_cuda_plugin()
    try:
        desc = topologies.get_topology_desc(
            platform="cuda", topology=topology, target_config=target_text
        )
    except (NotImplementedError, RuntimeError) as error:
        raise RuntimeError(
            f"Cannot describe GPUs ({error}): the CUDA plugin is not installed, or jax "
            "initialised its backends before vit_jax.compile could add it. Run `make "
            "compilers` and import vit_jax.compile before anything calls jax.devices()."
        ) from error
    return tuple(desc.devices)


_TPU_NAME = re.compile(r"^tpu-(v3|v4|v5e|v5p)(?:-(\d+)|:(\d+(?:x\d+)+))$")
_GPU_NAME = re.compile(
    r"^(" + "|".join(sorted(GPU_MODELS, key=len, reverse=True)) + r")(?:x(\d+))?(?:@(\d+))?$"
)


def get_target(name: str) -> Target:
    """A Target from its name:

    tpu-v3-32, tpu-v4-128, tpu-v5p-8   Cloud TPU slice names (TensorCores for v3,
                                       v4 and v5p; chips for v5e: tpu-v5e-16)
    tpu-v3:4x4, tpu-v5e:4x4            explicit topologies
    h100, h100x8, h100x16@2            N GPUs (default 1) on M hosts (default
                                       ceil(N / 8)); also h200, a100, a100-40gb
    """
    tpu = _TPU_NAME.match(name)
    if tpu:
        kind, count, explicit = tpu.groups()
        chip = TPU_CHIPS[kind]
        if explicit:
            topology = explicit
            if len(topology.split("x")) != chip.dims:
                raise ValueError(f"TPU {kind} topologies have {chip.dims} dimensions: {name}.")
        else:
            chips = int(count) // (2 if chip.cores_in_name else 1)
            if chips < 1:
                raise ValueError(f"{name}: a {kind} slice has at least 2 cores.")
            topology = "x".join(map(str, _torus_shape(chips, chip.dims)))
        devices = _tpu_devices(kind, topology, chip.topology_options)
        chips = math.prod(int(s) for s in topology.split("x"))
        per_chip = len(devices) // chips
        return Target(
            name=name,
            platform="tpu",
            device_kind=devices[0].device_kind,
            num_devices=len(devices),
            num_hosts=len({d.process_index for d in devices}),
            peak_flops_per_device=chip.peak_bf16_flops / per_chip,
            hbm_bytes_per_device=chip.hbm_bytes // per_chip,
            topology=f"{kind}:{topology}",
            _devices=devices,
        )
    gpu = _GPU_NAME.match(name)
    if gpu:
        model = GPU_MODELS[gpu.group(1)]
        count = int(gpu.group(2) or 1)
        hosts = int(gpu.group(3) or -(-count // model.gpus_per_host))
        if count % hosts:
            raise ValueError(f"{name}: {count} GPUs do not split evenly over {hosts} hosts.")
        text = (TARGETS_DIR / model.target_file).read_text()
        topology = f"1x{hosts}x{count // hosts}"  # slices x hosts x GPUs per host
        devices = _gpu_devices(text, topology)
        memory = int(re.search(r"device_memory_size:\s*(\d+)", text).group(1))
        return Target(
            name=name,
            platform="gpu",
            device_kind=devices[0].device_kind,
            num_devices=len(devices),
            num_hosts=hosts,
            peak_flops_per_device=model.peak_bf16_flops,
            hbm_bytes_per_device=memory,
            topology=topology,
            _devices=devices,
        )
    raise ValueError(
        f"Unknown target {name!r}: use tpu-<v3|v4|v5e|v5p>-<N> (e.g. tpu-v3-32), "
        f"tpu-v3:4x4, or <{'|'.join(GPU_MODELS)}>x<N>[@<hosts>] (e.g. h100x8, h100x16@2)."
    )


# ---------------------------------------------------------------- HLO text

_DTYPE_BYTES = {
    "pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
    "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
    "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<shape>.+?)\s+"
    r"(?P<op>" + "|".join(COLLECTIVES) + r")(?P<start>-start)?\("
)
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")


def _array_bytes(shape_text: str) -> list[float]:
    sizes = []
    for dtype, dims in _ARRAY.findall(shape_text):
        count = math.prod(int(d) for d in dims.split(",") if d) if dims else 1
        sizes.append(count * _DTYPE_BYTES[dtype])
    return sizes


def collectives(hlo_text: str) -> dict:
    """{op: {'count', 'bytes'}} of the collectives in compiled HLO text; bytes
    are each op's result (for async starts, the output half of their tuple)."""
    found = {op: {"count": 0, "bytes": 0} for op in COLLECTIVES}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        sizes = _array_bytes(match["shape"])
        if match["start"] and match["op"] in ("all-gather", "collective-permute"):
            # (operands..., outputs...[, u32 contexts]): keep the outputs.
            arrays = [s for s in sizes if s > 4] or sizes
            sizes = arrays[len(arrays) // 2 :]
        found[match["op"]]["count"] += 1
        found[match["op"]]["bytes"] += int(sum(sizes))
    return found


def custom_calls(hlo_text: str) -> dict[str, int]:
    """How often each custom-call target appears in the HLO text."""
    return dict(collections.Counter(re.findall(r'custom_call_target="([^"]+)"', hlo_text)))


# ---------------------------------------------------------------- compiling


def _parse_size(number: str, unit: str) -> int:
    return int(float(number) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit])


def resource_exhausted(message: str) -> dict:
    """The numbers of XLA's out-of-memory error, e.g. 'RESOURCE_EXHAUSTED: ...
    the total memory required for HLO temporaries (166.78G) exceeds available
    HBM (15.48G).'"""
    out = {"compiler_message": message.strip().splitlines()[0][:500]}
    required = re.search(r"required for (.+?) \(([\d.]+)([KMGT]?)\)", message)
    available = re.search(r"available HBM \(([\d.]+)([KMGT]?)\)", message)
    used = re.search(r"Used ([\d.]+)([KMGT]?) of ([\d.]+)([KMGT]?) hbm", message)
    if required:
        out["required_what"] = required.group(1)
        out["required_bytes"] = _parse_size(required.group(2), required.group(3))
    if available:
        out["available_bytes"] = _parse_size(available.group(1), available.group(2))
    if used:
        out["required_bytes"] = _parse_size(used.group(1), used.group(2))
        out["available_bytes"] = _parse_size(used.group(3), used.group(4))
    return out


def _set_model_option(config, name: str, value) -> None:
    if name not in model_options(config.model_name):
        raise ValueError(f"{config.model_name} has no option {name!r}.")
    with config.unlocked():
        config.model[name] = value


def apply_mesh_options(config, *, fsdp: int | None = None, model_axis: int | None = None,
                       remat: bool | None = None, dtype: str | None = None):  # fmt: skip
    """config with the mesh (data × fsdp [× model]), remat and the compute dtype
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
    # remat=False on a model without the option (the ResNets) is what it does.
    if remat or (remat is not None and "remat" in model_options(config.model_name)):
        _set_model_option(config, "remat", remat)
    if dtype is not None:
        _set_model_option(config, "dtype", jnp.dtype(dtype).name)
    return config


def run_length(config) -> tuple[int, int, tuple[int, int, int]]:
    """(num_classes, total_steps, epochs, image_shape) from the dataset registry
    (its split sizes are data: nothing is read)."""
    from vit_jax import data  # Imported here: it pulls in TensorFlow.

    info = data.get_dataset_info(config.dataset, config.data_dir)
    if config.total_steps > 0:
        steps = int(config.total_steps)
    else:
        num_train = data.num_examples(config.dataset, config.train_split, config.data_dir)
        steps = train.resolve_total_steps(config, num_train)
    channels = info.image_shape[-1] if info.image_shape else 3
    return info.num_classes, steps, (config.image_size, config.image_size, channels)


def _abstract(tree, shardings):
    return jax.tree.map(
        lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), tree, shardings
    )


_FORWARD_FLOPS: dict = {}


def forward_flops(config, num_classes: int) -> float:
    """Model FLOPs of one image's forward pass (XLA's count on its own
    attention: a custom call counts no FLOPs), once per distinct model."""
    key = (config.model_name, repr(sorted(config.model.items())), config.objective,
           config.image_size, num_classes)  # fmt: skip
    if key not in _FORWARD_FLOPS:
        masked = config.objective == "masked_patch_prediction"
        # The masked-patch model is measured on its encoder (its forward needs a
        # corruption rng); its 512-way per-patch layer adds under 1%.
        model = get_model(config.model_name, None if masked else num_classes, **config.model)
        _FORWARD_FLOPS[key] = costs.forward_flops(model, config.image_size)
    return _FORWARD_FLOPS[key]


def compile_train_step(config, target: Target | str, *, model_flops: bool = True) -> dict:
    """Compiles the trainer's step of `config` for `target`; the report as a dict
    (see the module docstring). Raises only for errors other than memory."""
    target = get_target(target) if isinstance(target, str) else target
    train.check_config(config)
    num_classes, total_steps, image_shape = run_length(config)
    with config.unlocked():
        config.total_steps = total_steps  # The schedule decays to this step.
    mesh = sharding.make_mesh(config.mesh, target.devices)
    sharding.check_batch_size(config.batch_size, mesh)
    sharding.check_batch_size(config.batch_size // config.accum_steps, mesh, "micro-batch size")

    attention_fn, attention_why = train.attention.resolve(
        config.attention, mesh, config.model.get("dtype", jnp.float32)
    )
    trainer = train.build_trainer(config, num_classes, image_shape, mesh)
    state = _abstract(trainer.abstract_state, trainer.state_shardings)
    batch_sharding = sharding.batch_sharding(mesh)
    batch = {"image": jax.ShapeDtypeStruct((config.batch_size, *image_shape), jnp.float32,
                                           sharding=batch_sharding)}  # fmt: skip
    if config.objective == "classification":
        batch["labels"] = jax.ShapeDtypeStruct(
            (config.batch_size, num_classes), jnp.float32, sharding=batch_sharding
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
            "total_steps": total_steps,
            "total_epochs": config.total_epochs,
            "attention": config.attention,
            "sharding_rules": [
                [p, s if isinstance(s, str) else list(s)] for p, s in config.sharding_rules
            ],  # fmt: skip
        },
        "attention": attention_why,
        "mesh": dict(mesh.shape),
        "hbm_bytes_per_device": target.hbm_bytes_per_device,
    }
    del attention_fn
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
        report["memory"] = resource_exhausted(str(error))
        return report
    report["compile_seconds"] = round(time.perf_counter() - start, 2)
    report.update(_analyse(compiled, target, report))
    if model_flops:
        forward = forward_flops(config, num_classes)
        per_device = 3 * forward * config.batch_size / target.num_devices
        report["model_flops_per_device"] = per_device
    _step_time(report, target, total_steps, config)
    return report


def _analyse(compiled, target: Target, report: dict) -> dict:
    memory = compiled.memory_analysis()
    arguments, outputs = memory.argument_size_in_bytes, memory.output_size_in_bytes
    aliased, temporaries = memory.alias_size_in_bytes, memory.temp_size_in_bytes
    code = memory.generated_code_size_in_bytes
    # Donated arguments share their buffers with the outputs they alias.
    total = arguments + outputs - aliased + temporaries + code
    out = {
        "fits": total <= target.hbm_bytes_per_device,
        "fits_basis": (
            "compiled: the TPU compiler checks its buffer assignment against HBM"
            if target.platform == "tpu"
            else "the buffer assignment against device_memory_size (XLA:GPU does not check)"
        ),
        "memory": {
            "arguments_bytes": arguments,
            "outputs_bytes": outputs,
            "aliased_bytes": aliased,
            "temporaries_bytes": temporaries,
            "code_bytes": code,
            "total_bytes": total,
            "headroom_bytes": target.hbm_bytes_per_device - total,
        },
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
    out["collectives"] = collectives(text)
    out["custom_calls"] = custom_calls(text)
    out["cudnn_attention"] = {
        "forward": any(k.startswith("__cudnn$fmha") and "Backward" not in k
                       for k in out["custom_calls"]),
        "backward": any(k.startswith("__cudnn$fmha") and "Backward" in k
                        for k in out["custom_calls"]),
    }  # fmt: skip
    return out


def _step_time(report: dict, target: Target, total_steps: int, config) -> None:
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
    days = total_steps * seconds * report["num_devices"] / SECONDS_PER_DAY
    report["device_days_bound"] = days
    key = (config.model_name, config.dataset, int(config.total_epochs))
    if key in PAPER_CORE_DAYS and report["device_kind"] == "TPU v3":
        report["paper_tpuv3_core_days"] = PAPER_CORE_DAYS[key]


# ---------------------------------------------------------------- printing


def _gib(n) -> str:
    return f"{n / GiB:.2f} GiB"


def format_report(report: dict) -> str:
    cfg = report["config"]
    lines = [
        f"{cfg['model_name']} {cfg['dataset']} batch {cfg['batch_size']} at "
        f"{cfg['image_size']} px on {report['target']} ({report['topology']}: "
        f"{report['num_devices']} x {report['device_kind']}, {report['num_hosts']} host(s))",
        f"  mesh        {report['mesh']}  remat {cfg['model'].get('remat', 'False')}  "
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
        )
    elif "model_flops_per_device" in report:
        lines.append(f"  flops       model {report['model_flops_per_device']:.3e} per device")
    if "cost_model_step_seconds" in report:
        line = (
            f"  step time   {report['cost_model_step_seconds']:.3f} s (XLA's cost model: a "
            f"bound, not a measurement), MFU <= {100 * report['mfu_bound']:.0f}%, "
            f"{report['config']['total_steps']:,} steps -> >= "
            f"{report['device_days_bound']:,.0f} device-days"
        )
        if "paper_tpuv3_core_days" in report:
            line += f" (paper, Table 2: {report['paper_tpuv3_core_days']:,} TPUv3-core-days)"
        lines.append(line)
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
_DTYPE = flags.DEFINE_string("dtype", None, "Set config.model.dtype (e.g. bfloat16).")
_OUT = flags.DEFINE_string("out", None, "Write the report as JSON here.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config = apply_mesh_options(
        _CONFIG.value,
        fsdp=_FSDP.value,
        model_axis=_MODEL_AXIS.value,
        remat=_REMAT.value,
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
    app.run(main)
