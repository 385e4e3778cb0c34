"""The devices a step can be compiled for without having them.

A target is named like a Cloud TPU slice or a GPU board (see `get_target`):
tpu-v3-32, tpu-v5e:4x4, h100, h100x16@2. Its per-device facts (peak FLOP/s,
HBM) are data beside this module, in compile_targets/catalogue.json, with the
GPUs' XLA descriptions (compile_targets/*.txtpb); its devices come from XLA's
own compilers, libtpu and the CUDA plugin, which run on a CPU
(`jax.experimental.topologies.get_topology_desc`).

Those compilers are installed apart from the project's environment (`make
compilers` → .venv/compilers) so that a plain CPU process (`make run`, the
tests) never loads them: with them on the path every jax process pays their
start-up, prints their warnings, and holds libtpu's one-process lock file
(/tmp/libtpu_lockfile). Importing this module changes nothing; a process that
compiles for targets calls `prepare_offline_compilers()` first.
"""

import dataclasses
import functools
import json
import math
import os
import pathlib
import re
import sys

import jax
from jax.experimental import topologies

from vit_jax.errors import UserError

GiB = 2**30
TARGETS_DIR = pathlib.Path(__file__).with_name("compile_targets")
# Where `make compilers` installs libtpu and the CUDA plugin; $VIT_JAX_COMPILERS
# names another folder.
DEFAULT_COMPILERS_DIR = pathlib.Path(__file__).parents[1] / ".venv" / "compilers"
_COMPILER_ENVIRONMENT = {
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
_INSTALL_HINT = (
    "run `make compilers` (pip install --target .venv/compilers -r requirements-compile.txt), "
    "and call vit_jax.targets.prepare_offline_compilers() before get_target"
)


def compilers_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("VIT_JAX_COMPILERS", DEFAULT_COMPILERS_DIR))


def prepare_offline_compilers() -> None:
    """Lets this process compile for TPUs and GPUs it does not have: puts the
    compilers' folder on sys.path, sets the environment libtpu and the CUDA
    plugin read when they load (at the first `get_target` of their kind), and
    keeps jax's own backend on the CPU when JAX_PLATFORMS chose none. Call it
    before the first `get_target`. Called after jax started its backends, it
    still works: those backends stay as they are, and the compilers are loaded
    only to describe targets."""
    directory = compilers_dir()
    if directory.is_dir() and str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    for name, value in _COMPILER_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    from jax._src import xla_bridge  # Whether backends started has no public query.

    # jax read JAX_PLATFORMS when it was imported; with the compilers on the
    # path it would otherwise start their (absent) TPU and GPU as backends.
    if jax.config.jax_platforms is None and not xla_bridge.backends_are_initialized():
        jax.config.update("jax_platforms", "cpu")


# ---------------------------------------------------------------- catalogue


@dataclasses.dataclass(frozen=True)
class TpuChip:
    """A TPU generation's per-chip facts."""

    kind: str  # As in get_topology_desc's topology names ("v3:4x4").
    peak_bf16_flops: float  # Dense bf16 matmul FLOP/s per chip.
    hbm_bytes: int  # Per chip.
    cores_in_name: bool  # v3/v4/v5p slices count TensorCores (2 a chip), v5e chips.
    dims: int  # Torus dimensions of its topology names.
    topology_options: tuple = ()  # get_topology_desc keyword arguments.


@dataclasses.dataclass(frozen=True)
class GpuModel:
    target_file: str  # A GpuTargetConfigProto in text format, in compile_targets/.
    peak_bf16_flops: float  # Dense bf16 tensor-core FLOP/s.
    gpus_per_host: int


@functools.cache
def catalogue() -> tuple[dict[str, TpuChip], dict[str, GpuModel]]:
    """(TPU chips by generation, GPU models by name), from catalogue.json."""
    data = json.loads((TARGETS_DIR / "catalogue.json").read_text())
    chips = {
        kind: TpuChip(
            kind=kind,
            peak_bf16_flops=float(chip["peak_bf16_flops"]),
            hbm_bytes=int(chip["hbm_gib"] * GiB),
            cores_in_name=chip["cores_in_name"],
            dims=chip["dims"],
            topology_options=tuple(sorted(chip.get("topology_options", {}).items())),
        )
        for kind, chip in data["tpu"].items()
    }
    gpus = {
        name: GpuModel(gpu["target_file"], float(gpu["peak_bf16_flops"]), gpu["gpus_per_host"])
        for name, gpu in data["gpu"].items()
    }
    return chips, gpus


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


def torus_shape(chips: int, dims: int) -> tuple[int, ...]:
    """The standard slice shape of `chips` chips: the smallest dimension doubled
    first, ties to the first while a dimension is 1, else to the last (v3-32 =
    4x4, v5e-8 = 2x4, v4-16 = 2x2x2, v4-32 = 2x2x4, v4-128 = 4x4x4)."""
    if chips < 1 or chips & (chips - 1):
        raise UserError(f"TPU slices have a power-of-two chip count, not {chips}.")
    shape = [1] * dims
    while math.prod(shape) < chips:
        smallest = min(shape)
        ties = [i for i, size in enumerate(shape) if size == smallest]
        shape[ties[0] if smallest == 1 else ties[-1]] *= 2
    return tuple(shape)


# ---------------------------------------------------------------- devices


@functools.cache
def _tpu_devices(kind: str, topology: str, options: tuple) -> tuple:
    try:
        desc = topologies.get_topology_desc(
            topology_name=f"{kind}:{topology}", platform="tpu", **dict(options)
        )
    except RuntimeError as error:
        if "not installed" in str(error):
            raise UserError(
                f"The TPU compiler (libtpu) is not installed in {compilers_dir()}: {_INSTALL_HINT}."
            ) from None
        raise
    return tuple(desc.devices)


def _register_cuda_plugin() -> None:
    """jax looks for plugins (the jax_plugins package) when it is imported and
    registers them at its first backend: both may have come before the
    compilers were on sys.path, so register the CUDA one now."""
    from jax._src import xla_bridge  # The registry has no public query.

    xla_bridge._discover_and_register_pjrt_plugins()
    if "cuda" not in xla_bridge._topology_factories:
        try:
            from jax_plugins import xla_cuda12
        except ImportError:
            return  # _gpu_devices says how to install it.
        xla_cuda12.initialize()
        _register_partitioners(xla_bridge._backend_factories["cuda"].c_api)
    # jax looks up cuDNN's version helpers once, when it is imported; the fused
    # attention refuses to trace ("cuDNN is not detected") if that was before.
    from jax._src import lib
    from jax._src.cudnn import fused_attention_stablehlo

    if lib.cuda_versions is None:
        import jax_cuda12_plugin._versions as versions

        lib.cuda_versions = fused_attention_stablehlo.cuda_versions = versions


def _register_partitioners(c_api) -> None:
    """What jax gives every plugin it discovers, for one registered late: the
    custom-partitioning callback (cuDNN's attention is partitioned through it;
    without it XLA:GPU finds "no registered implementation for custom call to
    CustomSPMDPartitioning")."""
    from jax._src import custom_partitioning as cp
    from jax._src.lib import xla_client

    xla_client.register_custom_call_partitioner(
        cp._CUSTOM_PARTITIONING_CALL_NAME,
        cp._custom_partitioning_propagate_user_sharding,
        cp._custom_partitioning_partition,
        cp._custom_partitioning_infer_sharding_from_operands,
        can_side_effecting_have_replicated_sharding=True,
        c_api=c_api,
    )


@functools.cache
def _gpu_devices(target_text: str, topology: str) -> tuple:
    _register_cuda_plugin()
    try:
        desc = topologies.get_topology_desc(
            platform="cuda", topology=topology, target_config=target_text
        )
    except (NotImplementedError, RuntimeError) as error:
        raise UserError(
            f"Cannot describe GPUs ({error}): the CUDA plugin is not installed in "
            f"{compilers_dir()}: {_INSTALL_HINT}."
        ) from None
    return tuple(desc.devices)


# ---------------------------------------------------------------- names

_TPU_NAME = re.compile(r"^tpu-(v\w+?)(?:-(\d+)|:(\d+(?:x\d+)+))$")
_GPU_NAME = re.compile(r"^([\w-]+?)(?:x(\d+))?(?:@(\d+))?$")


def get_target(name: str) -> Target:
    """A Target from its name:

    tpu-v3-32, tpu-v4-128, tpu-v5p-8   Cloud TPU slice names (TensorCores for v3,
                                       v4 and v5p; chips for v5e: tpu-v5e-16)
    tpu-v3:4x4, tpu-v5e:4x4            explicit topologies
    h100, h100x8, h100x16@2            N GPUs (default 1) on M hosts (default
                                       ceil(N / 8)); also h200, a100, a100-40gb
    """
    chips, gpus = catalogue()
    tpu = _TPU_NAME.match(name)
    if tpu and tpu.group(1) in chips:
        return _tpu_target(name, chips[tpu.group(1)], *tpu.groups()[1:])
    gpu = _GPU_NAME.match(name)
    if gpu and gpu.group(1) in gpus:
        return _gpu_target(name, gpus[gpu.group(1)], int(gpu.group(2) or 1), gpu.group(3))
    raise UserError(
        f"Unknown target {name!r}: use tpu-<{'|'.join(chips)}>-<N> (e.g. tpu-v3-32), "
        f"tpu-v3:4x4, or <{'|'.join(gpus)}>x<N>[@<hosts>] (e.g. h100x8, h100x16@2)."
    )


def _tpu_target(name: str, chip: TpuChip, count: str | None, explicit: str | None) -> Target:
    if explicit:
        topology = explicit
        if len(topology.split("x")) != chip.dims:
            raise UserError(f"TPU {chip.kind} topologies have {chip.dims} dimensions: {name}.")
    else:
        num_chips = int(count) // (2 if chip.cores_in_name else 1)
        if num_chips < 1:
            raise UserError(f"{name}: a {chip.kind} slice has at least 2 cores.")
        topology = "x".join(map(str, torus_shape(num_chips, chip.dims)))
    devices = _tpu_devices(chip.kind, topology, chip.topology_options)
    per_chip = len(devices) // math.prod(int(s) for s in topology.split("x"))
    return Target(
        name=name,
        platform="tpu",
        device_kind=devices[0].device_kind,
        num_devices=len(devices),
        num_hosts=len({d.process_index for d in devices}),
        peak_flops_per_device=chip.peak_bf16_flops / per_chip,
        hbm_bytes_per_device=chip.hbm_bytes // per_chip,
        topology=f"{chip.kind}:{topology}",
        _devices=devices,
    )


def _gpu_target(name: str, model: GpuModel, count: int, hosts: str | None) -> Target:
    num_hosts = int(hosts or -(-count // model.gpus_per_host))
    if count % num_hosts:
        raise UserError(f"{name}: {count} GPUs do not split evenly over {num_hosts} hosts.")
    text = (TARGETS_DIR / model.target_file).read_text()
    topology = f"1x{num_hosts}x{count // num_hosts}"  # slices x hosts x GPUs per host
    devices = _gpu_devices(text, topology)
    return Target(
        name=name,
        platform="gpu",
        device_kind=devices[0].device_kind,
        num_devices=len(devices),
        num_hosts=num_hosts,
        peak_flops_per_device=model.peak_bf16_flops,
        hbm_bytes_per_device=int(re.search(r"device_memory_size:\s*(\d+)", text).group(1)),
        topology=topology,
        _devices=devices,
    )
