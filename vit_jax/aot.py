"""Ahead-of-time compilation's two ends: the abstract inputs a step is lowered
on (nothing allocated), and what XLA tells of the compiled program: its
memory per device, the collectives and custom calls in its HLO text, and the
numbers of its out-of-memory error. The compiler report (vit_jax.compile) and
the benchmark (experiments/bench) both read programs here, so they count the
same things.
"""

import collections
import math
import re

import jax


def abstract_arrays(tree, shardings):
    """`tree`'s leaves as jax.ShapeDtypeStructs carrying `shardings` (a tree of
    the same structure): a program's inputs without their data."""
    return jax.tree.map(
        lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), tree, shardings
    )


def device_memory(compiled) -> dict | None:
    """Bytes one device holds while `compiled` (a jax.stages.Compiled) runs,
    from XLA's buffer assignment: arguments, outputs, the aliased part of both
    (donated arguments whose buffers the outputs reuse, held once),
    temporaries, and the generated code (which a TPU keeps in HBM);
    total = arguments + outputs - aliased + temporaries + code. None where the
    backend gives no analysis."""
    memory = compiled.memory_analysis()
    if memory is None:
        return None
    sizes = {
        "arguments_bytes": memory.argument_size_in_bytes,
        "outputs_bytes": memory.output_size_in_bytes,
        "aliased_bytes": memory.alias_size_in_bytes,
        "temporaries_bytes": memory.temp_size_in_bytes,
        "code_bytes": memory.generated_code_size_in_bytes,
    }
    sizes = {key: int(value) for key, value in sizes.items()}
    sizes["total_bytes"] = (
        sizes["arguments_bytes"]
        + sizes["outputs_bytes"]
        - sizes["aliased_bytes"]
        + sizes["temporaries_bytes"]
        + sizes["code_bytes"]
    )
    return sizes


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
    are each op's result (for async starts, the output half of their tuple).
    Static counts: an op inside a loop counts once."""
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


# ---------------------------------------------------------------- out of memory


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
