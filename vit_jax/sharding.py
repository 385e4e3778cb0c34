"""The device mesh and where every array lives on it.

The mesh's axes come from `config.mesh`, e.g. [('data', -1), ('fsdp', 2)]
(-1: all remaining devices). Batches are split over every axis except
'model' (data parallelism, and FSDP is data parallelism too). Parameters,
optimizer state and EMA are placed by `config.sharding_rules`, a list of
(regex, spec) tried in order against each leaf's path, e.g.
'params/Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel' or
'opt_state/1/mu/Transformer/.../kernel' (so write rules with re.search in
mind: match the end of the path, never anchor at '^'). A spec is

  'fsdp'       shard the largest dimension divisible by the 'fsdp' axis size
               over 'fsdp' (ZeRO-3 style; replicated when none divides);
  'replicate'  a full copy on every device;
  a tuple      an explicit PartitionSpec, one entry per dimension, e.g.
               (None, 'model') for a Dense kernel split by output column.

Leaves that no rule matches are replicated.
"""

import re
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vit_jax.errors import UserError
from vit_jax.optim import path_name

MODEL_AXIS = "model"
FSDP_AXIS = "fsdp"

# Megatron-style tensor parallelism for the ViT encoder over a 'model' axis:
# the first MLP layer and q/k/v split by output (heads), the second MLP layer
# and the attention output split by input, so each block needs one all-reduce.
TENSOR_PARALLEL_RULES = (
    (r"MlpBlock_0/Dense_0/kernel$", (None, MODEL_AXIS)),
    (r"MlpBlock_0/Dense_0/bias$", (MODEL_AXIS,)),
    (r"MlpBlock_0/Dense_1/kernel$", (MODEL_AXIS, None)),
    (r"MultiHeadDotProductAttention_0/(query|key|value)/kernel$", (None, MODEL_AXIS, None)),
    (r"MultiHeadDotProductAttention_0/(query|key|value)/bias$", (MODEL_AXIS, None)),
    (r"MultiHeadDotProductAttention_0/out/kernel$", (MODEL_AXIS, None, None)),
)


def make_mesh(axes: Sequence[tuple[str, int]], devices=None) -> Mesh:
    """A mesh with the named axes over `devices` (default: all devices of all
    processes). One axis may have size -1: it takes the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    names = tuple(name for name, _ in axes)
    sizes = [int(size) for _, size in axes]
    if len(set(names)) != len(names):
        raise UserError(f"config.mesh names an axis twice: {names}.")
    if sizes.count(-1) > 1:
        raise UserError(f"config.mesh: at most one axis may have size -1, got {list(axes)}.")
    fixed = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % fixed:
            raise UserError(
                f"config.mesh {list(axes)}: {len(devices)} devices are not divisible by the "
                f"fixed axes' product {fixed}."
            )
        sizes[sizes.index(-1)] = len(devices) // fixed
    if int(np.prod(sizes)) != len(devices):
        raise UserError(
            f"config.mesh {list(axes)} needs {int(np.prod(sizes))} devices but there are "
            f"{len(devices)}: set one axis to -1 or change the sizes."
        )
    auto = (jax.sharding.AxisType.Auto,) * len(names)
    return jax.make_mesh(tuple(sizes), names, axis_types=auto, devices=devices)


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes a batch is split over: all but the tensor-parallel one."""
    return tuple(name for name in mesh.axis_names if name != MODEL_AXIS)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every data-parallel axis."""
    return NamedSharding(mesh, PartitionSpec(batch_axes(mesh)))


def batch_constraint(mesh: Mesh) -> Callable:
    """An activation → the same activation with its leading (batch) dimension
    split over the data-parallel axes, as FSDP means: the models apply it to
    their head's input (`constrain_batch`), and so in the backward pass to
    that input's gradient.

    Without it, XLA:GPU's partitioner follows the head kernel's FSDP shard
    (its input dimension, the larger one) back through the encoder: the
    activations' gradients are resharded by the hidden dimension with
    all-to-alls in every block (291 all-to-alls, 377 GiB per step and 1.8×
    the memory of plain data parallelism for ViT-H/14 at 518 px on 8 H100s).
    """
    spec = batch_sharding(mesh)
    return lambda x: jax.lax.with_sharding_constraint(x, spec)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "config.batch_size") -> None:
    """Raises when `batch_size` cannot be split evenly over the batch axes."""
    shards = int(np.prod([mesh.shape[name] for name in batch_axes(mesh)]))
    if batch_size % shards:
        raise UserError(
            f"{what}={batch_size} is not divisible by the {shards} data-parallel devices of "
            f"mesh {dict(mesh.shape)}: use a multiple of {shards}."
        )


def _fsdp_spec(shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    size = mesh.shape.get(FSDP_AXIS, 1)
    if size == 1:
        return PartitionSpec()
    # The largest dimension that divides evenly; ties go to the last one.
    candidates = [(dim, i) for i, dim in enumerate(shape) if dim % size == 0]
    if not candidates:
        return PartitionSpec()
    _, axis = max(candidates)
    spec = [None] * len(shape)
    spec[axis] = FSDP_AXIS
    return PartitionSpec(*spec)


def _spec_for(name: str, shape, mesh: Mesh, rules) -> PartitionSpec:
    for pattern, spec in rules:
        if not re.search(pattern, name):
            continue
        if spec == "fsdp":
            return _fsdp_spec(shape, mesh)
        if spec == "replicate":
            return PartitionSpec()
        if isinstance(spec, str):
            raise UserError(
                f"sharding rule ({pattern!r}, {spec!r}): a spec is 'fsdp', 'replicate' or a "
                "tuple of mesh axis names / None per dimension."
            )
        spec = tuple(spec)
        if len(spec) > len(shape):
            raise UserError(
                f"sharding rule ({pattern!r}, {spec}) has {len(spec)} entries but {name} has "
                f"shape {tuple(shape)}."
            )
        for axis, dim in zip(spec, shape, strict=False):
            names = () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)
            unknown = [a for a in names if a not in mesh.shape]
            if unknown:
                raise UserError(
                    f"sharding rule ({pattern!r}, {spec}) uses axis {unknown[0]!r}, which is not "
                    f"in the mesh {tuple(mesh.axis_names)}: add it to config.mesh."
                )
            parts = int(np.prod([mesh.shape[a] for a in names]))
            if dim % parts:
                raise UserError(
                    f"sharding rule ({pattern!r}, {spec}): dimension {dim} of {name} "
                    f"{tuple(shape)} is not divisible by {parts}."
                )
        return PartitionSpec(*spec)
    return PartitionSpec()


def tree_shardings(abstract_tree, mesh: Mesh, rules) -> object:
    """A NamedSharding for every leaf of `abstract_tree` (arrays or
    ShapeDtypeStructs), following `rules` (see the top of this module)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: NamedSharding(
            mesh, _spec_for(path_name(path), getattr(leaf, "shape", ()), mesh, rules)
        ),
        abstract_tree,
    )
