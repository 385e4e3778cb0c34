"""Where a step's time goes on XLA:CPU: a jax.profiler trace, summed per op.

    python experiments/bench/profile_step.py --model=ViT-B_16 --batch=8 --mode=train

Builds the same compiled step as `python -m experiments.bench.bench` (the
trainer's step or the inference forward), warms it up, traces `--steps`
steps and prints the time per step by kind of op, by XLA op (thunk) and by
the model op it came from (the HLO's op_name, the twelve blocks added
together, with the output shape), e.g.
"MlpBlock_0/Dense_1/dot_general" or its gradient "transpose(jvp(...))/...".
Kinds, from the op's name:

  dot          a matmul or convolution (YNNPACK fusion, or Eigen's `dot.N`)
  copy         a layout copy, transpose, slice or concatenation
  reduce       a reduction on its own
  custom-call  an FFI custom call (--attention=cpu)
  elementwise  every other fusion (GELU, softmax, LayerNorm, Adam, ...)

Two things to know when reading a trace of XLA:CPU. Some ops run
asynchronously: the dots XLA leaves to Eigen (`dot.N`, `dot_general.N`: the
MLP weight gradients and the attention's backward, whose transposed operands
YNNPACK does not take) return at once and compute in threads the trace does
not show; this script ends them at their "end: NAME" marker instead. And
ops run concurrently on two cores, so time with several ops running is
shared evenly between them: the per-op times add up to the busy time, not
more. Matmul rates (GFLOP/s) are the op's dot FLOPs, read from the HLO, over
that shared time. `--hlo=NAME` prints the HLO lines that mention an op.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from experiments.bench import bench, xla_flags  # noqa: E402
from vit_jax import sharding  # noqa: E402
from vit_jax.kernels.backends import ATTENTION_BACKENDS  # noqa: E402


def kind(name: str) -> str:
    """A thunk's kind from the words of its name ("copy_bitcast_fusion.3")."""
    words = set(re.split(r"[-_.\d]+", name.lower())) - {"fusion", "wrapped", ""}
    if words & {"dot", "ynn", "xnn", "convolution", "onednn"}:
        return "dot"
    # The custom-call kernels: the CPU attention.
    if "ffi" in words or {"custom", "call"} <= words:
        return "custom-call"
    if words and words <= {"copy", "transpose", "bitcast", "slice", "concatenate"}:
        return "copy"
    if "reduce" in words:
        return "reduce"
    return "elementwise" if words else "other"


EIGEN_DOT = re.compile(r"^dot(_general)?\.\d+$")
NOT_OPS = ("$", "PjitFunction", "ThunkExecutor", "SlinkyThreadPool", "ThreadpoolListener", "end: ")


def thunk_events(trace_dir: str) -> list[dict]:
    """The ops' complete events ("ph": "X") on XLA:CPU's threads, each with
    its duration up to the op's end."""
    files = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    if not files:
        raise SystemExit(f"No *.trace.json.gz under {trace_dir}: did jax.profiler write a trace?")
    with gzip.open(max(files, key=os.path.getmtime)) as f:
        trace = json.load(f)
    threads = {}
    for event in trace["traceEvents"]:
        if event.get("ph") == "M" and event.get("name") == "thread_name":
            threads[(event["pid"], event["tid"])] = event["args"]["name"]
    events, ends = [], collections.defaultdict(list)
    for event in trace["traceEvents"]:
        if event.get("ph") != "X" or "dur" not in event:
            continue
        if event["name"].startswith("end: "):
            ends[event["name"][len("end: ") :]].append(event["ts"])
        thread = threads.get((event["pid"], event.get("tid")), "")
        # Not ops: the host loop's Python/TraceMe events, XLA's executor spans
        # that enclose the ops, its pool's waits and the "end:" markers.
        if "python" in thread.lower() or event["name"].startswith(NOT_OPS):
            continue
        events.append({**event, "thread": thread})
    # The dots XLA leaves unfused run on Eigen, asynchronously, in threads
    # the trace does not show: their event ends at dispatch, and the "end:
    # NAME" marker, when the executor saw them finish, is the closest bound.
    # (Other ops' markers can come well after the op's own end event.)
    for event in events:
        if not EIGEN_DOT.match(event["name"]):
            continue
        later = [ts for ts in ends.get(event["name"], ()) if ts >= event["ts"]]
        if later:
            event["dur"] = max(event["dur"], min(later) - event["ts"])
    return events


DIMS = re.compile(r"\[([\d,]*)\]")
# One HLO instruction: name, shape (an array or a tuple), opcode, operands, the
# rest (attributes, metadata).
DEFINITION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\([^()]*\)|\S+) ([\w-]+)\(([^)]*)\)(.*)$")


def parse_hlo(hlo_text: str) -> tuple[dict[str, list[tuple]], str | None]:
    """Computation name → its instructions (DEFINITION's groups), and the
    entry computation's name: the entry's instructions are the thunks."""
    computations, current, entry = {}, None, None
    for line in hlo_text.splitlines():
        if line.endswith("{") and not line.startswith(" "):
            name = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            current = computations.setdefault(name, [])
            entry = name if line.startswith("ENTRY") else entry
        elif current is not None and (match := DEFINITION.match(line)):
            current.append(match.groups())
    return computations, entry


def op_sources(hlo_text: str) -> dict[str, str]:
    """Thunk name → "output shape  source op", the source with the jit prefix
    and the block index dropped, so the twelve blocks' ops add up together."""
    computations, entry = parse_hlo(hlo_text)
    sources = {}
    for name, shape, _, _, attributes in computations.get(entry, []):
        op_name = re.search(r'op_name="([^"]*)"', attributes)
        if op_name:
            source = re.sub(r"^jit\([^)]*\)/", "", op_name.group(1))
            source = re.sub(r"encoderblock_\d+", "encoderblock_*", source)
            sources[name] = f"{shape.split('{')[0]:22s} {source}"
    return sources


def _dims(shape: str) -> list[int]:
    match = DIMS.search(shape)
    return [int(d) for d in match.group(1).split(",") if d] if match else []


def op_flops(hlo_text: str) -> dict[str, float]:
    """Thunk name → the FLOPs of the matmuls it runs (2·output·contracted
    size of each dot, inside its fused computation or as a plain dot)."""
    computations, entry = parse_hlo(hlo_text)

    def dot_flops(instructions, dots=None) -> float:
        """Of the dots among `instructions` (or only those named `dots`)."""
        shapes = {name: shape for name, shape, *_ in instructions}
        total = 0.0
        for name, shape, opcode, operands, attributes in instructions:
            if opcode != "dot" or (dots is not None and name not in dots):
                continue
            lhs = _dims(shapes.get(operands.split(",")[0].strip().lstrip("%"), ""))
            contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", attributes)
            axes = [int(a) for a in contracting.group(1).split(",") if a] if contracting else []
            total += 2 * np.prod(_dims(shape)) * np.prod([lhs[a] for a in axes])
        return total

    flops, thunks = {}, computations.get(entry, [])
    for name, _, opcode, _, attributes in thunks:  # The entry's ops are the thunks.
        called = re.search(r"calls=%([^,\s]+)", attributes)
        if opcode == "dot":  # Eigen's, on the entry's own values.
            flops[name] = dot_flops(thunks, dots={name})
        elif opcode == "fusion" and called and called.group(1) in computations:
            flops[name] = dot_flops(computations[called.group(1)])
    return {name: f for name, f in flops.items() if f}


def shared_time(events: list[dict]) -> tuple[float, float, float, list[float]]:
    """(span, idle, time with two or more ops at once, each op's share),
    microseconds. An op's share splits every moment it ran evenly between
    the ops running then, so the shares add up to the busy time: on two
    cores two ops at once each get about half of them."""
    edges = sorted(
        [(e["ts"], 1, i) for i, e in enumerate(events)]
        + [(e["ts"] + e["dur"], -1, i) for i, e in enumerate(events)]
    )
    running, shares = set(), [0.0] * len(events)
    last, idle, overlap = edges[0][0], 0.0, 0.0
    for ts, delta, index in edges:
        elapsed = ts - last
        if not running:
            idle += elapsed
        for other in running:
            shares[other] += elapsed / len(running)
        if len(running) >= 2:
            overlap += elapsed
        (running.add if delta > 0 else running.discard)(index)
        last = ts
    return edges[-1][0] - edges[0][0], idle, overlap, shares


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B_16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--mode", choices=["forward", "train"], default="train")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--steps", type=int, default=2, help="traced steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=30, help="ops to list")
    parser.add_argument("--xla_flags", default="")
    parser.add_argument("--attention", choices=ATTENTION_BACKENDS, default="auto")
    parser.add_argument("--hlo", default="", help="print the HLO lines that mention this op name")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.xla_flags:
        xla_flags.add(args.xla_flags, "--xla_flags")
    import jax

    bench_args = bench.parse_args(
        [
            "--mesh=data:-1,fsdp:1",
            "--num_classes=1000",
            f"--attention={args.attention}",
        ]
    )
    setting = bench.Setting(args.model, args.batch, args.resolution, args.mode, args.dtype)
    mesh = sharding.make_mesh(bench.parse_mesh(bench_args.mesh))
    build = bench.build_train if args.mode == "train" else bench.build_forward
    step = build(setting, bench_args, mesh)
    step.run(args.warmup)
    start = time.perf_counter()
    step.run(args.steps)
    untraced = (time.perf_counter() - start) / args.steps
    trace_dir = tempfile.mkdtemp(prefix="vit_jax_profile_")
    jax.profiler.start_trace(trace_dir)
    step.run(args.steps)
    jax.profiler.stop_trace()

    events = thunk_events(trace_dir)
    span, idle, overlap, shares = shared_time(events)
    totals, counts = collections.Counter(), collections.Counter()
    for event, share in zip(events, shares, strict=True):
        totals[event["name"]] += share
        counts[event["name"]] += 1
    kinds = collections.Counter()
    for name, micros in totals.items():
        kinds[kind(name)] += micros
    ms = lambda micros: micros / args.steps / 1e3  # noqa: E731  Per step, in ms.
    print(
        f"{args.model} {args.mode} batch {args.batch} @{args.resolution} {args.dtype}: "
        f"{untraced * 1e3:.0f} ms a step untraced, {ms(span):.0f} ms traced, of which "
        f"{ms(idle):.0f} ms with no op running and {ms(overlap):.0f} ms with two or more"
    )
    print("by kind: " + ", ".join(f"{k} {ms(v):.0f} ms" for k, v in kinds.most_common()))
    header = f"{'ms/step':>8} {'share':>6} {'calls':>5}"
    print(f"\nby op (time shared evenly between ops running at once):\n{header}  kind         op")
    for name, micros in totals.most_common(args.top):
        print(
            f"{ms(micros):8.1f} {micros / span:6.1%} {counts[name] // args.steps:5d}"
            f"  {kind(name):12s} {name}"
        )
    hlo = step.compiled.as_text()
    sources, flops = op_sources(hlo), op_flops(hlo)
    grouped, group_calls = collections.Counter(), collections.Counter()
    group_flops = collections.Counter()
    for name, micros in totals.items():
        grouped[sources.get(name, name)] += micros
        group_calls[sources.get(name, name)] += counts[name] // args.steps
        group_flops[sources.get(name, name)] += flops.get(name, 0) * counts[name] / args.steps
    print(
        f"\nby source op (all blocks together; GFLOP/s of the matmuls in context):\n"
        f"{header} {'GFLOP/s':>8}  {'output shape':22s} source"
    )
    for label, micros in grouped.most_common(args.top):
        rate = f"{group_flops[label] / ms(micros) / 1e6:8.1f}" if group_flops[label] else " " * 8
        print(
            f"{ms(micros):8.1f} {micros / span:6.1%} {group_calls[label]:5d} {rate}  {label[:150]}"
        )
    print(f"\nThe trace: {trace_dir} (TensorBoard's profile plugin or Perfetto opens it).")
    if args.hlo:
        mention = re.compile(rf"%{re.escape(args.hlo)}(?![\w.])")  # Not ynn_fusion.12 for .1
        for line in hlo.splitlines():
            if mention.search(line):
                print(line.strip()[:400])


if __name__ == "__main__":
    main()
