"""How fast is the model where it runs, and how close to the hardware's peak?

    python -m experiments.bench.bench --model=ViT-B_16 --batch=8 --resolution=224 \
        --mode=forward,train [--dtype=float32,bfloat16] [--compare=timm,official]

For every configuration (the product of the comma-separated lists) it prints
and appends to a JSON-lines file:

  images/s         of the jitted forward (`train=False`) or of the project's real
                   train step (vit_jax.step.build_trainer's, jitted with the
                   trainer's shardings and state donation);
  TFLOP/s          XLA's cost analysis of the lowered step ÷ its time;
  MFU              model FLOPs (forward; 3 × forward for a train step, App. Table 6)
                   ÷ time ÷ the device's peak: on CPU the best f32 matmul rate
                   (JAX, and PyTorch with --compare=timm) re-measured in every
                   timed round, so that it sees the same load; on GPU/TPU the
                   chip's spec sheet. The XLA FLOP rate's share is printed too;
  memory           XLA's memory analysis of the compiled step, per device
                   (arguments + outputs − donated + temporaries + code, counted
                   as the compiler report counts it: vit_jax.aot.device_memory);
  compile time     lowering + XLA compilation, seconds.

`--compare=timm` builds timm's VisionTransformer with the same architecture
(PyTorch, on the GPU when JAX runs on one; `make bench-deps` installs both
on CPU machines, they are not project dependencies) and times it
interleaved with ours, round by round, so that the ratio ours/timm stays
fair on a loaded machine. `--compare=official` times, interleaved the same
way, the official vision_transformer code's formulation of the same model
(stock flax.linen layers: experiments/bench/official_vit.py) on the same
parameters, inside the same jitted forward or trainer step: what vit_jax's
own computation buys. `--compile_only` skips timing:
with `--mesh=fsdp:8` on 8 simulated devices it shows what FSDP does to the
per-device memory of a model too large to run here (e.g. ViT-H/14).
"""

import argparse
import dataclasses
import datetime
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import machine
from experiments.bench import host_memory, official_vit, xla_flags
from vit_jax import aot, sharding
from vit_jax.config import check_config, default_config
from vit_jax.errors import cli
from vit_jax.kernels import backends
from vit_jax.models import costs, get_model, model_kwargs
from vit_jax.objectives import OBJECTIVES
from vit_jax.step import build_trainer

MODES = ("forward", "train")
PEERS = ("timm", "official")  # What --compare can time beside ours.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DEFAULT_RESULTS = os.path.join("experiments", "bench", "results.jsonl")
INSTALL_HINT = "install PyTorch and timm into the venv with `make bench-deps`"

# Dense matmul peaks per chip from the vendors' spec sheets, FLOP/s. JAX runs
# float32 matmuls on these at TF32 (GPU) or bf16-pass (TPU) precision by
# default, so the float32 entry is that rate. Order matters: first match wins.
SPEC_PEAKS = (
    ("h200", {"bfloat16": 989e12, "float32": 495e12}),
    ("h100", {"bfloat16": 989e12, "float32": 495e12}),
    ("a100", {"bfloat16": 312e12, "float32": 156e12}),
    ("l4", {"bfloat16": 121e12, "float32": 60e12}),
    ("tpu v4", {"bfloat16": 275e12, "float32": 275e12}),
    ("tpu v5 lite", {"bfloat16": 197e12, "float32": 197e12}),
    ("tpu v5", {"bfloat16": 459e12, "float32": 459e12}),
    ("tpu v6", {"bfloat16": 918e12, "float32": 918e12}),
)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One benchmarked configuration."""

    model: str
    batch: int
    resolution: int
    mode: str
    dtype: str


# ---------------------------------------------------------------- the peak


Shape = tuple[int, int, int]  # A matmul (m, k) @ (k, n) as (m, k, n).


def jax_matmul_rate(shape: Shape, repeats: int) -> float:
    """Best FLOP/s of a jitted float32 (m × k) @ (k × n) matmul (XLA's dot)."""
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = jax.device_put(rng.standard_normal((m, k), np.float32))
    b = jax.device_put(rng.standard_normal((k, n), np.float32))
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    best = min(_seconds(lambda: matmul(a, b).block_until_ready()) for _ in range(repeats))
    return 2 * m * k * n / best


def torch_matmul_rate(shape: Shape, repeats: int) -> float:
    """Best FLOP/s of the same matmul in PyTorch (its CPU kernels are oneDNN/MKL)."""
    import torch

    m, k, n = shape
    a, b = torch.randn(m, k, dtype=torch.float32), torch.randn(k, n, dtype=torch.float32)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * m * k * n / best


def peak_shapes(sizes, settings) -> list[Shape]:
    """The square matmuls of --matmul_sizes and each ViT setting's MLP matmul
    (batch·tokens, hidden, mlp_dim): on some CPUs the model's own shape runs
    faster than any square (192 against 155-180 GFLOP/s on an AVX-512 VM),
    and a peak below it would overstate the MFU."""
    shapes = [(n, n, n) for n in sizes]
    for setting in settings:
        model = get_model(setting.model, None)
        if not hasattr(model, "mlp_dim"):  # A ResNet: its matmuls are convolutions.
            continue
        size = setting.resolution
        images = jax.ShapeDtypeStruct((setting.batch, size, size, 3), jnp.float32)
        # The MLP blocks' outputs (batch, tokens, hidden), by shape only.
        _, state = jax.eval_shape(
            lambda p, x, model=model: model.apply(
                {"params": p},
                x,
                capture_intermediates=lambda module, _: type(module).__name__ == "MlpBlock",
                mutable=["intermediates"],
            ),
            costs.abstract_params(model, size),
            images,
        )
        batch, tokens, hidden = jax.tree.leaves(state)[0].shape
        shape = (batch * tokens, hidden, model.mlp_dim)
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def measured_peak(shapes, repeats: int, worker: "TimmWorker | None") -> dict:
    """{'jax': best FLOP/s, 'torch': ..., 'peak': the largest, 'shape': the
    (m, k, n) of JAX's best}: the CPU's attainable f32 rate. PyTorch's is
    measured in the timm worker."""
    jax_rates = {tuple(shape): jax_matmul_rate(shape, repeats) for shape in shapes}
    shape = max(jax_rates, key=jax_rates.get)
    rates = {"jax": jax_rates[shape]}
    if worker is not None:
        reply = worker.request(op="matmul", shapes=[list(s) for s in shapes], repeats=repeats)
        rates["torch"] = reply["flops"]
    return {**rates, "peak": max(rates.values()), "shape": shape}


def spec_peak(device, dtype: str) -> float | None:
    """The chip's spec-sheet peak for `dtype` (per device), None when unknown."""
    kind = device.device_kind.lower()
    for name, peaks in SPEC_PEAKS:
        if name in kind:
            return peaks[dtype]
    return None


# ---------------------------------------------------------------- our steps


@dataclasses.dataclass
class CompiledStep:
    """A compiled step and how to run it `iters` times (blocking at the end)."""

    run: Callable[[int], None]
    compile_seconds: float
    xla_flops: float  # Of the lowered (global, unpartitioned) step.
    memory: dict | None  # Per device: vit_jax.aot.device_memory (None: no analysis).
    compiled: object = None  # jax.stages.Compiled, for its HLO (profile_step.py).


def _compile(jitted, *abstract_args):
    start = time.perf_counter()
    lowered = jitted.lower(*abstract_args)
    compiled = lowered.compile()
    return compiled, lowered, time.perf_counter() - start


def _random_images(setting: Setting, data_sharding) -> jax.Array:
    shape = (setting.batch, setting.resolution, setting.resolution, 3)
    images = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    return jax.device_put(images, data_sharding)


def train_config(setting: Setting, args) -> ml_collections.ConfigDict:
    """The trainer's own config for this setting (Adam, clipping, cosine)."""
    config = default_config()
    config.model_name = setting.model
    config.batch_size = setting.batch
    config.image_size = setting.resolution
    config.total_steps = 10_000
    config.mesh = parse_mesh(args.mesh)
    config.model.dtype = setting.dtype
    config.attention = args.attention
    if args.remat:
        config.model.remat = True
    check_config(config)
    return config


def build_forward(setting: Setting, args, mesh, model=None) -> CompiledStep:
    """The jitted inference forward, params laid out by the trainer's rules;
    `model` replaces ours (the official-formulation baseline)."""
    if model is None:
        dtype = DTYPES[setting.dtype]
        attention_fn, _ = backends.choose_attention(args.attention, mesh, dtype)  # As the trainer.
        model = get_model(setting.model, args.num_classes, dtype=dtype, attention_fn=attention_fn)
    abstract_params = costs.abstract_params(model, setting.resolution)
    rules = default_config().sharding_rules
    param_shardings = sharding.tree_shardings(abstract_params, mesh, rules)
    data_sharding = sharding.batch_sharding(mesh)
    forward = jax.jit(
        lambda params, images: model.apply({"params": params}, images, train=False),
        in_shardings=(param_shardings, data_sharding),
        out_shardings=data_sharding,
    )
    image_shape = (setting.batch, setting.resolution, setting.resolution, 3)
    images_abstract = jax.ShapeDtypeStruct(image_shape, jnp.float32, sharding=data_sharding)
    compiled, lowered, seconds = _compile(
        forward, aot.abstract_arrays(abstract_params, param_shardings), images_abstract
    )
    memory = aot.device_memory(compiled)
    if args.compile_only:
        return CompiledStep(None, seconds, costs.lowered_flops(lowered), memory)
    params = jax.jit(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *image_shape[1:])))["params"],
        out_shardings=param_shardings,
    )()
    images = _random_images(setting, data_sharding)

    def run(iters):
        for _ in range(iters):
            out = compiled(params, images)
        out.block_until_ready()

    return CompiledStep(run, seconds, costs.lowered_flops(lowered), memory, compiled)


def build_train(setting: Setting, args, mesh, model=None) -> CompiledStep:
    """The trainer's step, jitted exactly as train_and_evaluate jits it;
    `model` replaces ours (the official-formulation baseline)."""
    config = train_config(setting, args)
    image_shape = (setting.resolution, setting.resolution, 3)
    trainer = build_trainer(config, args.num_classes, image_shape, mesh, model)
    data_sharding = sharding.batch_sharding(mesh)
    batch_abstract = OBJECTIVES[config.objective].abstract_batch(
        setting.batch, image_shape, args.num_classes, data_sharding
    )
    compiled, lowered, seconds = _compile(
        trainer.train_step,
        trainer.abstract_sharded_state(),
        batch_abstract,
    )
    memory = aot.device_memory(compiled)
    if args.compile_only:
        return CompiledStep(None, seconds, costs.lowered_flops(lowered), memory)
    holder = {"state": trainer.init_state(config.seed)}
    labels = np.eye(args.num_classes, dtype=np.float32)[np.arange(setting.batch) % args.num_classes]
    batch = {
        "image": _random_images(setting, data_sharding),
        "labels": jax.device_put(labels, data_sharding),
    }

    def run(iters):
        state = holder.pop("state")  # Donated: the old buffers die with each step.
        for _ in range(iters):
            state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        holder["state"] = state

    return CompiledStep(run, seconds, costs.lowered_flops(lowered), memory, compiled)


# ---------------------------------------------------------------- timm's steps
#
# timm runs in a worker process of its own: torchvision imports triton, whose
# LLVM crashes against TensorFlow's (which vit_jax.train loads through clu)
# when both live in one process. The worker answers one JSON line per request
# on stdin/stdout; its steps still alternate with ours, round by round.


def timm_runner(setting: Setting, num_classes: int, device: str = "cpu") -> Callable[[int], None]:
    """timm's VisionTransformer with our architecture, forward or an Adam +
    clipping train step like ours, as a function of the iteration count, on
    `device` ("cpu", or "cuda" beside JAX on a GPU)."""
    import torch

    model = timm_model(setting.model, setting.resolution, num_classes).to(device)
    images = torch.from_numpy(
        np.random.default_rng(0)
        .uniform(-1, 1, (setting.batch, 3, setting.resolution, setting.resolution))
        .astype(np.float32)
    ).to(device)
    autocast = torch.autocast(device, torch.bfloat16, enabled=setting.dtype == "bfloat16")
    # CUDA kernels run asynchronously: a timed run ends when the GPU is done.
    finish = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if setting.mode == "forward":
        model.eval()

        def run(iters):
            with torch.inference_mode(), autocast:
                for _ in range(iters):
                    model(images)
            finish()

        return run
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    labels = (torch.arange(setting.batch) % num_classes).to(device)

    def run(iters):
        for _ in range(iters):
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        finish()

    return run


def timm_model(name: str, resolution: int, num_classes: int):
    """timm's VisionTransformer with the hyper-parameters of our `name`."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    kwargs = model_kwargs(name)
    if kwargs.get("resnet") is not None or "hidden_size" not in kwargs:
        raise ValueError(f"--compare=timm supports the plain ViTs; {name} is not one.")
    return TimmViT(
        img_size=resolution,
        patch_size=kwargs["patch_size"][0],
        embed_dim=kwargs["hidden_size"],
        depth=kwargs["num_layers"],
        num_heads=kwargs["num_heads"],
        mlp_ratio=kwargs["mlp_dim"] / kwargs["hidden_size"],
        num_classes=num_classes,
        global_pool="token",
    )


def timm_worker(requests, replies) -> None:
    """The worker's loop: 'matmul' → best FLOP/s, 'build' → a timm step,
    'run' → that step run `iters` times, 'count' → its parameter count."""
    run = model = None
    for line in requests:
        request = json.loads(line)
        try:
            import timm  # noqa: F401
            import torch

            torch.set_num_threads(os.cpu_count())
            if request["op"] == "matmul":
                shapes = request["shapes"]
                rate = max(torch_matmul_rate(shape, request["repeats"]) for shape in shapes)
                reply = {"flops": rate}
            elif request["op"] == "build":
                setting = Setting(**request["setting"])
                run = timm_runner(setting, request["num_classes"], request["device"])
                model = timm_model(setting.model, setting.resolution, request["num_classes"])
                reply = {"params": sum(p.numel() for p in model.parameters())}
            else:
                run(request["iters"])
                reply = {"done": True}
        except Exception as error:  # Reported to the parent, which stops with it.
            reply = {"error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def torch_device() -> str:
    """Where timm runs: on the GPU when JAX runs on one, else on the CPU."""
    return "cuda" if jax.devices()[0].platform == "gpu" else "cpu"


class TimmWorker:
    """The parent's handle on a timm worker process (see timm_worker)."""

    def __init__(self):
        self._process = subprocess.Popen(
            [sys.executable, "-m", "experiments.bench.bench", "--timm_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def request(self, **request) -> dict:
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise SystemExit(f"the timm worker died (exit {self._process.wait()}); see above.")
        reply = json.loads(line)
        if "error" in reply:
            hint = f": {INSTALL_HINT}" if "ModuleNotFoundError" in reply["error"] else ""
            raise SystemExit(f"--compare=timm failed in the timm worker: {reply['error']}{hint}.")
        return reply

    def runner(self, setting: Setting, num_classes: int) -> tuple[Callable[[int], None], int]:
        """A run(iters) for timm's step of `setting`, and timm's parameter count."""
        built = self.request(
            op="build",
            setting=dataclasses.asdict(setting),
            num_classes=num_classes,
            device=torch_device(),
        )
        return (lambda iters: self.request(op="run", iters=iters)), built["params"]

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait()


# ---------------------------------------------------------------- timing


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_interleaved(
    runners: dict, rounds: int, iters: int, probe: Callable[[], float] | None = None
) -> tuple[dict[str, list[float]], list[float]]:
    """Seconds per iteration of each runner, per round, and the value of
    `probe()` (the CPU's matmul peak) in each round. Everything alternates
    inside every round, so a load spike on the machine hits all alike."""
    for run in runners.values():
        run(1)  # Warm-up: first-call allocations, caches, lazy init.
    times = {name: [] for name in runners}
    probes = []
    for _ in range(rounds):
        for name, run in runners.items():
            times[name].append(_seconds(lambda run=run: run(iters)) / iters)
        if probe is not None:
            probes.append(probe())
    return times, probes


# ---------------------------------------------------------------- one setting


def benchmark(setting: Setting, args, mesh, peak: dict | None, worker=None) -> dict:
    """Compiles, times and describes one setting: the JSON record."""
    if setting.mode not in MODES:
        raise SystemExit(f"--mode={setting.mode!r}; choose from {', '.join(MODES)}.")
    if setting.dtype not in DTYPES:
        raise SystemExit(f"--dtype={setting.dtype!r}; choose from {', '.join(DTYPES)}.")
    sharding.check_batch_size(setting.batch, mesh, "--batch")
    build = build_forward if setting.mode == "forward" else build_train
    ours = build(setting, args, mesh)
    model = get_model(setting.model, args.num_classes)
    num_params = costs.count_params(costs.abstract_params(model, setting.resolution))
    forward_flops = costs.forward_flops(model, setting.resolution, setting.batch)
    model_flops = forward_flops * (1 if setting.mode == "forward" else 3)
    record = {
        **dataclasses.asdict(setting),
        "mesh": args.mesh,
        "remat": args.remat,
        "attention": args.attention,
        "attention_resolved": backends.choose_attention(
            args.attention, mesh, DTYPES[setting.dtype]
        )[1],
        "params": num_params,
        "compile_s": ours.compile_seconds,
        "xla_flops_per_step": ours.xla_flops,
        "model_flops_per_step": model_flops,
        "memory_bytes_per_device": ours.memory["total_bytes"] if ours.memory else None,
        "memory_breakdown": ours.memory,
    }
    if args.compile_only:
        return record
    runners = {"vit_jax": ours.run}
    if "official" in args.compare:
        # Same trainer (or jitted forward), same shardings: only the model differs.
        official = official_vit.get_official_model(
            setting.model, args.num_classes, dtype=DTYPES[setting.dtype]
        )
        runners["official"] = build(setting, args, mesh, official).run
    if worker is not None:
        runners["timm"], timm_params = worker.runner(setting, args.num_classes)
        if timm_params != num_params:  # Same architecture, or the ratio means nothing.
            raise SystemExit(
                f"timm's {setting.model} has {timm_params:,} parameters, ours {num_params:,}: "
                "timm_model no longer builds the same architecture."
            )
    # On CPU the peak is re-measured in every round, beside the model, so that
    # both see the same load; on GPU/TPU it is the spec sheet's.
    probe = None
    if peak is not None:
        probe = lambda: measured_peak([peak["shape"]], 1, worker)["peak"]  # noqa: E731
    times, round_peaks = time_interleaved(runners, args.rounds, args.iters, probe)
    if not round_peaks:
        round_peaks = [mesh_peak(setting.dtype, mesh)] * args.rounds
    seconds = statistics.median(times["vit_jax"])

    def utilisation(flops):  # Median over rounds of rate ÷ that round's peak.
        if None in round_peaks:
            return None
        pairs = zip(times["vit_jax"], round_peaks, strict=True)
        return statistics.median(flops / t / p for t, p in pairs)

    record.update(
        step_s=seconds,
        step_s_rounds=times["vit_jax"],
        images_per_s=setting.batch / seconds,
        achieved_tflops=ours.xla_flops / seconds / 1e12,
        model_tflops=model_flops / seconds / 1e12,
        peak_tflops=statistics.median(round_peaks) / 1e12 if None not in round_peaks else None,
        peak_tflops_rounds=[p / 1e12 if p else None for p in round_peaks],
        mfu=utilisation(model_flops),
        xla_flops_utilisation=utilisation(ours.xla_flops),
    )
    for peer in PEERS:
        if peer not in times:
            continue
        # Paired per round: each ratio compares two runs made back to back.
        ratios = [t / o for o, t in zip(times["vit_jax"], times[peer], strict=True)]
        record.update(
            {
                f"{peer}_step_s_rounds": times[peer],
                f"{peer}_images_per_s": setting.batch / statistics.median(times[peer]),
                f"ratio_vs_{peer}": statistics.median(ratios),
                f"ratio_vs_{peer}_rounds": ratios,
            }
        )
    return record


def mesh_peak(dtype: str, mesh) -> float | None:
    """The spec-sheet FLOP/s of the whole mesh (GPU/TPU), None when unknown."""
    per_device = spec_peak(mesh.devices.flat[0], dtype)
    return per_device * mesh.size if per_device else None


# ---------------------------------------------------------------- output


def _commit() -> str:
    """The git commit the benchmark ran at ('' outside a checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True)
    return done.stdout.decode().strip() if done.returncode == 0 else ""


def describe_run(peak: dict | None, host_memory_reuse: bool = False) -> dict:
    """What every record of this run shares: machine, versions, load, peak,
    and whether glibc kept freed step buffers for reuse (host_memory.py)."""
    device = jax.devices()[0]
    run = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "host": platform.node(),
        "cpu_model": machine.cpu_model(),
        "platform": device.platform,
        "device_kind": device.device_kind,
        "num_devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "host_memory_reuse": host_memory_reuse,
        "load_avg_1m_start": os.getloadavg()[0],
    }
    if peak:
        run["matmul_shape"] = list(peak["shape"])
        run["matmul_gflops"] = {k: v / 1e9 for k, v in peak.items() if k != "shape"}
    return run


def format_record(record: dict) -> str:
    """One human-readable block per setting."""
    head = (
        f"{record['model']} {record['mode']} batch {record['batch']} @{record['resolution']} "
        f"{record['dtype']} mesh {record['mesh']}{' remat' if record['remat'] else ''}"
        + f" attention {record['attention']} ({record['attention_resolved']})"
    )
    memory = record["memory_bytes_per_device"]
    lines = [
        head,
        f"  compile {record['compile_s']:.1f} s | memory/device "
        + (f"{memory / 2**20:,.1f} MiB" if memory is not None else "n/a")
        + f" | XLA GFLOP/step {record['xla_flops_per_step'] / 1e9:,.4g}"
        f" | model GFLOP/step {record['model_flops_per_step'] / 1e9:,.4g}",
    ]
    if "images_per_s" in record:
        lines.append(
            f"  {record['images_per_s']:.2f} img/s | {1e3 * record['step_s']:.1f} ms/step | "
            f"achieved {1e3 * record['achieved_tflops']:.1f} GFLOP/s (XLA count)"
        )
        if record["mfu"] is None:
            lines.append("  MFU n/a: unknown device peak (add the chip to SPEC_PEAKS)")
        else:
            lines.append(
                f"  MFU {100 * record['mfu']:.1f}% | XLA FLOP rate "
                f"{100 * record['xla_flops_utilisation']:.1f}% of the peak "
                f"{1e3 * record['peak_tflops']:,.1f} GFLOP/s"
            )
    for peer in PEERS:
        if f"ratio_vs_{peer}" in record:
            rounds = record[f"ratio_vs_{peer}_rounds"]
            lines.append(
                f"  {peer} {record[f'{peer}_images_per_s']:.2f} img/s | ours/{peer} "
                f"{record[f'ratio_vs_{peer}']:.3f} (median of rounds "
                f"{min(rounds):.3f}-{max(rounds):.3f})"
            )
    lines.append(f"  load average {record['load_avg_1m_start']:.2f} → {record['load_avg_1m']:.2f}")
    return "\n".join(lines)


def append_jsonl(path: str, record: dict) -> None:
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------- CLI


def parse_mesh(text: str) -> list[tuple[str, int]]:
    """'data:-1,fsdp:8' → [('data', -1), ('fsdp', 8)] (config.mesh's form)."""
    axes = []
    for part in text.split(","):
        name, _, size = part.partition(":")
        try:
            axes.append((name.strip(), int(size)))
        except ValueError:
            raise SystemExit(
                f"--mesh={text!r}: write axes as name:size, e.g. data:-1,fsdp:8."
            ) from None
    return axes


def _csv(cast):
    return lambda text: [cast(x) for x in text.split(",") if x]


def _peers(text: str) -> list[str]:
    peers = [] if text == "none" else text.split(",")
    unknown = [peer for peer in peers if peer not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {', '.join(unknown)}; choose none or from {', '.join(PEERS)}"
        )
    return peers


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", type=_csv(str), default=["ViT-B_16"])
    parser.add_argument("--batch", type=_csv(int), default=[8], help="global batch size(s)")
    parser.add_argument("--resolution", type=_csv(int), default=[224])
    parser.add_argument("--mode", type=_csv(str), default=["forward", "train"])
    parser.add_argument("--dtype", type=_csv(str), default=["float32"])
    parser.add_argument(
        "--compare",
        type=_peers,
        default=[],
        help="none, or a comma-separated list of: timm (PyTorch, `make bench-deps`), "
        "official (the official code's formulation of the same model: official_vit.py)",
    )
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--mesh", default="data:-1,fsdp:1", help="config.mesh as name:size,...")
    parser.add_argument("--remat", action="store_true", help="rematerialise encoder blocks")
    parser.add_argument(
        "--attention",
        choices=backends.ATTENTION_BACKENDS,
        default="auto",
        help="config.attention: auto (cuDNN's fused kernel for 16-bit on GPU, else XLA's), "
        "xla, cudnn, cpu (the optional fused kernel, one CPU device)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median is kept)")
    parser.add_argument("--iters", type=int, default=2, help="steps per round and runner")
    parser.add_argument(
        "--matmul_sizes",
        type=_csv(int),
        default=[1024, 2048, 4096],
        help="square matmuls for the CPU peak (each ViT's MLP matmul is measured too)",
    )
    parser.add_argument(
        "--compile_only", action="store_true", help="compile and report memory, no timing"
    )
    parser.add_argument(
        "--simulate_devices",
        type=int,
        default=0,
        help="N simulated CPU devices (sets XLA_FLAGS before JAX starts its backend)",
    )
    parser.add_argument(
        "--xla_flags", default="", help="extra XLA_FLAGS, e.g. --xla_cpu_use_onednn=true"
    )
    parser.add_argument(
        "--host_memory",
        choices=["reuse", "glibc_default"],
        default="glibc_default",
        help="reuse: keep freed step buffers in the heap (host_memory.py; not what users run)",
    )
    parser.add_argument("--results", default=DEFAULT_RESULTS, help="JSON-lines file to append to")
    parser.add_argument("--timm_worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


@cli
def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.timm_worker:
        timm_worker(sys.stdin, sys.stdout)
        return []
    worker = TimmWorker() if "timm" in args.compare else None
    try:
        return run_all(args, worker)
    finally:
        if worker is not None:
            worker.close()


def run_all(args, worker) -> list[dict]:
    """Every setting of `args`, printed and appended to args.results."""
    # First: it holds only for threads that have not allocated yet.
    reuse = args.host_memory == "reuse" and host_memory.reuse_freed_memory()
    if args.simulate_devices:
        flag = f"--xla_force_host_platform_device_count={args.simulate_devices}"
        xla_flags.add(flag, f"--simulate_devices={args.simulate_devices}")
    if args.xla_flags:
        xla_flags.add(args.xla_flags, "--xla_flags")
    if worker is not None:
        # JAX takes 75% of a GPU's memory at start; leave timm's process room.
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
    mesh = sharding.make_mesh(parse_mesh(args.mesh))
    on_cpu = jax.devices()[0].platform == "cpu"
    peak = None
    settings = [
        Setting(*values)
        for values in itertools.product(
            args.model, args.batch, args.resolution, args.mode, args.dtype
        )
    ]
    if on_cpu and not args.compile_only:
        shapes = peak_shapes(args.matmul_sizes, settings)
        names = ", ".join("x".join(map(str, shape)) for shape in shapes)
        print(f"Measuring the f32 matmul peak (m x k x n: {names})...", flush=True)
        peak = measured_peak(shapes, repeats=3, worker=worker)
        names = ("jax", "torch", "peak")
        rates = ", ".join(f"{k} {peak[k] / 1e9:.1f}" for k in names if k in peak)
        best = "x".join(map(str, peak["shape"]))
        print(f"  GFLOP/s: {rates} (JAX's best at {best})", flush=True)
    run = describe_run(peak, reuse)
    records = []
    for setting in settings:
        print(f"Benchmarking {setting} ...", flush=True)
        record = {
            **run,
            **benchmark(setting, args, mesh, peak, worker),
            "load_avg_1m": os.getloadavg()[0],
        }
        print(format_record(record), flush=True)
        append_jsonl(args.results, record)
        records.append(record)
    print(f"Appended {len(records)} record(s) to {args.results}.")
    return records


if __name__ == "__main__":
    main()
