"""Correctness checks that need a GPU, run before its benchmarks (gpu.sh).

    JAX_PLATFORMS=cuda python experiments/bench/gpu_checks.py [--model=ViT-B_16]

The CPU test suite cannot reach the GPU-only paths, so this script checks
them where they run, each printed as PASS/FAIL with its numbers:

1. 16-bit attention compiles to cuDNN's fused kernel (a custom call in the
   optimised HLO: vit_jax.kernels.cudnn_attention, what config.attention="auto" takes for
   16-bit on GPU), and its outputs equal XLA's attention to bf16 precision;
2. bf16 compute agrees with float32 (same parameters);
3. the trainer's bf16 train step keeps float32 master weights, and on one
   fixed batch its loss falls like the float32 step's, with finite gradients.

Exit status 1 when any check fails; a check that raises is reported as
failed with its error, and the others still run.
"""

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import sharding
from vit_jax.config import check_config, default_config
from vit_jax.kernels import cudnn_attention
from vit_jax.models import get_model
from vit_jax.step import build_trainer

RESULTS = []


def check(name: str, ok: bool, detail: str) -> None:
    RESULTS.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


def attention_checks(name: str, batch: int, resolution: int) -> None:
    # No head: the official head starts at zero, which would make every
    # comparison of initial logits trivially exact.
    bf16 = get_model(name, None, dtype=jnp.bfloat16, attention_fn=cudnn_attention.attention_fn)
    f32 = get_model(name, None)
    images = jax.random.uniform(jax.random.key(1), (batch, resolution, resolution, 3), minval=-1)
    params = jax.jit(lambda: f32.init(jax.random.key(0), images[:1])["params"])()

    fused = jax.jit(lambda p, x: bf16.apply({"params": p}, x, train=False))
    hlo = fused.lower(params, images).compile().as_text()
    check(
        "cuDNN fused attention in the bf16 forward",
        "fmha" in hlo.lower(),
        "custom call found" if "fmha" in hlo.lower() else "no fmha custom call in the HLO",
    )
    explicit_model = get_model(name, None, dtype=jnp.bfloat16)  # XLA's attention.
    explicit = jax.jit(lambda p, x: explicit_model.apply({"params": p}, x, train=False))
    reference = jax.jit(lambda p, x: f32.apply({"params": p}, x, train=False))
    out_fused = fused(params, images)
    out_explicit, out_f32 = explicit(params, images), reference(params, images)
    error = relative_error(out_fused, out_explicit)
    check("fused == XLA attention (bf16)", error < 3e-2, f"max relative error {error:.2e}")
    error = relative_error(out_fused, out_f32)
    check("bf16 == float32 forward (pre-logits)", error < 6e-2, f"max relative error {error:.2e}")


def train_losses(name: str, batch: int, resolution: int, steps: int, dtype: str):
    """The trainer's own jitted step run `steps` times on one fixed batch:
    the losses and gradient norms, and the final parameters' dtypes."""
    config = default_config()
    config.model_name, config.batch_size, config.image_size = name, batch, resolution
    config.total_steps, config.warmup_steps, config.lr = steps, 5, 1e-3
    config.model.dtype = dtype
    check_config(config)
    mesh = sharding.make_mesh(config.mesh)
    image_shape = (resolution, resolution, 3)
    trainer = build_trainer(config, 10, image_shape, mesh)
    step, state = trainer.train_step, trainer.init_state(config.seed)
    rng = np.random.default_rng(0)
    data = {
        "image": rng.uniform(-1, 1, (batch, *image_shape)).astype(np.float32),
        "labels": np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)],
    }
    losses, grad_norms = [], []
    for _ in range(steps):
        state, metrics = step(state, data)
        losses.append(float(metrics["train/loss"]))
        grad_norms.append(float(metrics["train/grad_norm"]))
    return losses, grad_norms, {str(x.dtype) for x in jax.tree.leaves(state.params)}


def train_check(name: str, batch: int, resolution: int, steps: int) -> None:
    bf16, bf16_norms, dtypes = train_losses(name, batch, resolution, steps, "bfloat16")
    f32, _, _ = train_losses(name, batch, resolution, steps, "float32")
    check("float32 master weights under bf16 compute", dtypes == {"float32"}, f"{dtypes}")
    finite = bool(np.all(np.isfinite(bf16 + bf16_norms)))
    gap = abs(bf16[-1] - f32[-1]) / f32[-1]
    check(
        f"bf16 train step tracks float32 ({steps} steps, one batch)",
        finite and bf16[-1] < 0.9 * bf16[0] and gap < 0.1,
        f"loss bf16 {bf16[0]:.3f} → {bf16[-1]:.3f}, float32 {f32[0]:.3f} → {f32[-1]:.3f} "
        f"(final gap {gap:.1%})",
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B_16")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    print(f"JAX {jax.__version__} on {device.platform}: {device.device_kind}", flush=True)
    if device.platform != "gpu":
        raise SystemExit("These checks are for a GPU; JAX sees none (JAX_PLATFORMS=cuda?).")
    for checks, extra in ((attention_checks, ()), (train_check, (args.steps,))):
        try:
            checks(args.model, args.batch, args.resolution, *extra)
        except Exception as error:  # Reported; the next group still runs.
            check(checks.__name__, False, f"raised {type(error).__name__}: {error}"[:2000])
    print(f"{sum(RESULTS)}/{len(RESULTS)} checks passed.", flush=True)
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
