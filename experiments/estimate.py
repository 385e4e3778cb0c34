"""What a run costs, measured on the model its config builds: parameters,
forward FLOPs at the config's resolution, training exaFLOPs (App. Table 6's
convention: 3 × forward FLOPs × images seen) and its time.

The time is given in TPUv3-core-days, Table 2's unit, at the throughput the paper
itself implies: 4262 exaFLOPs of ViT-H/14 in 2.5k TPUv3-core-days (App. Table 6,
Table 2), i.e. 19.7 TFLOP/s per core. Where the benchmark file of
experiments/bench holds a train-step record of the (model, resolution) pair (the
latest wins), the time at that measured throughput is given too, in days of the
benchmarked devices, named as the record names them.
"""

import dataclasses
import functools
import json
import os

from vit_jax import data
from vit_jax.models import costs, get_model

BENCH_FILE = os.path.join("experiments", "bench", "results.jsonl")  # vit_jax.bench's default.
ASSUMED_FLOPS_PER_CORE = 4262e18 / (2500 * 86400)  # TPUv3, from the paper's own numbers.
SECONDS_PER_DAY = 86400


@dataclasses.dataclass(frozen=True)
class RunCost:
    params: int
    forward_gflops: float  # One image at the config's resolution.
    images_seen: float
    train_exaflops: float
    tpu_core_days: float  # At ASSUMED_FLOPS_PER_CORE: Table 2's unit.
    measured_days: float | None = None  # At a benchmarked throughput, when there is one.
    measured_unit: str = ""  # What measured_days counts, e.g. 'cpu-days (1 device at ...)'.


CORE_DAYS_BASIS = (
    f"TPUv3-core-days at {ASSUMED_FLOPS_PER_CORE / 1e12:.1f} TFLOP/s per core, the rate the "
    "paper implies (ViT-H/14: 4262 exaFLOPs in 2.5k core-days, App. Table 6 and Table 2)"
)


def images_seen(config) -> float:
    """total_steps × batch, or total_epochs × the training split's size."""
    if config.total_steps > 0:
        return float(config.total_steps * config.batch_size)
    return config.total_epochs * data.num_examples(
        config.dataset, config.train_split, config.data_dir
    )


def _model_key(config) -> tuple:
    """What decides the model's shape and FLOPs, as a hashable key."""
    masked = config.get("objective", "classification") == "masked_patch_prediction"
    num_classes = (
        None if masked else data.get_dataset_info(config.dataset, config.data_dir).num_classes
    )
    options = tuple(sorted(config.model.to_dict().items()))
    return config.model_name, options, num_classes, masked, config.image_size


@functools.lru_cache(maxsize=256)
def _measure(key: tuple) -> tuple[int, float]:
    """(parameters, forward FLOPs per image), lowered once per distinct model."""
    name, options, num_classes, masked, resolution = key
    # Masked patch prediction is measured on its encoder (no head): its forward
    # needs a corruption RNG that costs.forward_flops does not pass, and its
    # per-patch 512-way layer adds under 1% (0.15 of 35.7 GFLOPs for ViT-B/16).
    model = get_model(name, None if masked else num_classes, **dict(options))
    params = costs.count_params(costs.abstract_params(model, resolution))
    return params, costs.forward_flops(model, resolution)


@functools.lru_cache(maxsize=1)
def _bench_entries(path: str) -> tuple[dict, ...]:
    if not os.path.exists(path):
        return ()
    with open(path) as f:
        return tuple(json.loads(line) for line in f if line.strip())


def _benchmarked(model_name: str, resolution: int, path: str):
    """The latest timed train-step record of this model and resolution, or None."""
    matches = [
        entry
        for entry in _bench_entries(path)
        if entry.get("mode") == "train"
        and entry.get("model") == model_name
        and entry.get("resolution") == resolution
        and entry.get("images_per_s")
    ]
    return matches[-1] if matches else None


def run_cost(config, bench_file: str = BENCH_FILE) -> RunCost:
    params, flops = _measure(_model_key(config))
    seen = images_seen(config)
    exaflops = costs.pretraining_exaflops(flops, seen)
    core_days = exaflops * 1e18 / ASSUMED_FLOPS_PER_CORE / SECONDS_PER_DAY
    entry = _benchmarked(config.model_name, config.image_size, bench_file)
    if not entry:
        return RunCost(params, flops / 1e9, seen, exaflops, core_days)
    devices = entry.get("num_devices", 1)
    days = seen / entry["images_per_s"] * devices / SECONDS_PER_DAY
    unit = (
        f"{entry.get('device_kind', 'device')}-days ({devices} device(s) at "
        f"{entry['images_per_s']:.0f} images/s, benchmarked in {bench_file})"
    )
    return RunCost(params, flops / 1e9, seen, exaflops, core_days, days, unit)
