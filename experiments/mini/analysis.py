"""Study 8 — the analysis figures of Sec. 4.5 (Fig. 6 and 7) on a trained model.

The baseline ViT (configs/fashion_mnist.py's 6×64 with 4 heads on 4×4
patches, a 7×7 grid) trained on Fashion-MNIST's 60k images with the
baseline's recipe for 470, 940 and 1,880 steps (each its own schedule: the
distance tracked over training), three seeds, analysed through
vit_jax.analysis on test images: mean attention distance per head and depth
beside uniform attention (which looks everywhere without looking far) and
beside the untrained model, and, for the longest run of the first seed,
attention rollout, position-embedding similarity and patch-filter
principal components.
"""

import os

import numpy as np

from experiments.mini import evidence, report
from experiments.mini.models import baseline
from experiments.mini.runs import (
    FASHION_MNIST,
    PRETRAIN_STEPS,
    accuracy,
    preprocessing,
    pretrain_config,
    train,
    untrained,
)
from vit_jax.analysis import commands
from vit_jax.analysis.attention import attention_maps
from vit_jax.analysis.attention_distance import mean_attention_distance, uniform_attention_distance
from vit_jax.data import local
from vit_jax.infer import model_from_params, pixels_per_token

TITLE = "Analysis figures (Fig. 6/7)"
CLAIM = evidence.Claim(
    quote=(
        "some heads attend to most of the image already in the lowest layers, showing that "
        "the ability to integrate information globally is indeed used by the model. Other "
        "attention heads have consistently small attention distances in the low layers. "
        "[...] the attention distance increases with network depth."
    ),
    source="Sec. 4.5, Fig. 7 (right), App. D.7",
    comparison=(
        "mean attention distance of every head of the longest runs over test images, against "
        "uniform attention on the same grid: in the first layer the farthest head and the "
        "closest, and the slope of the layer mean with depth (px per layer), over seeds; the "
        "untrained model and the shorter runs beside them"
    ),
    rule=(
        "not testable when every head of every layer lies within 5% of uniform attention; "
        "holds when the first layer has a head at 90% of the uniform distance or more and one "
        "below 75% of it on every seed, and the slope with depth has its 95% interval above "
        "zero; partly when one of the two holds; does not hold otherwise"
    ),
)
COST = (
    "~90 CPU-minutes on 2 cores: 3 seeds × 470, 940 and 1,880 steps at batch 128 at "
    "1.89 steps/s (experiments/results/mini_rates.json), plus the analyses"
)
DEFAULT_SEEDS = (0, 1, 2)
MODEL = baseline()
LENGTHS = (PRETRAIN_STEPS // 4, PRETRAIN_STEPS // 2, PRETRAIN_STEPS)
NUM_IMAGES = 4


def _test_images(setting) -> tuple[list[str], np.ndarray]:
    """The first test image of each of the first NUM_IMAGES classes, in [-1, 1]."""
    from vit_jax import data

    batch = next(
        iter(
            data.get_iterator(
                FASHION_MNIST,
                "test",
                batch_size=setting.batch(64),
                preprocess=preprocessing(FASHION_MNIST, 28),
                train=False,
                data_dir=setting.data_dir,
            )
        )
    )
    labels = np.asarray(batch["labels"]).argmax(axis=-1)
    present = [c for c in range(10) if (labels == c).any()][:NUM_IMAGES]
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in present]
    names = [local.FASHION_MNIST_CLASSES[c] for c in present]
    return names, np.asarray(batch["image"])[firsts]


def planned_runs(setting) -> int:
    return len(setting.subset(LENGTHS)) * len(setting.seeds)


def distances(params, images) -> tuple[np.ndarray, float]:
    """(layers, heads) mean attention distance in px, and uniform attention's."""
    loaded = model_from_params(params)
    maps = attention_maps(loaded.module, params, images)
    patch = pixels_per_token(loaded.module)[0]
    per_head = mean_attention_distance(maps, loaded.grid, patch, loaded.has_class_token)
    return np.asarray(per_head), float(uniform_attention_distance(loaded.grid, patch))


def _record(steps, seed, per_head, uniform, test_accuracy):
    return dict(
        steps=steps,
        seed=seed,
        uniform_px=uniform,
        test_accuracy=test_accuracy,
        first_layer_max_px=float(per_head[0].max()),
        first_layer_min_px=float(per_head[0].min()),
        depth_slope_px=evidence.slope(range(len(per_head)), per_head.mean(axis=1)),
        largest_departure=float(np.abs(per_head / uniform - 1).max()),
        per_head_px=per_head.round(2).tolist(),
    )


def run(setting) -> report.StudyResult:
    names, images = _test_images(setting)
    records, figures = [], []
    lengths = setting.subset(LENGTHS)
    for seed in setting.seeds:
        for steps in lengths:
            config = pretrain_config(setting, MODEL, dataset=FASHION_MNIST, seed=seed, steps=steps)
            trained = train(setting, config, f"analysis-{steps}-s{seed}")
            if steps == lengths[0]:
                fresh = untrained(setting, config)
                records.append(_record(0, seed, *distances(fresh.params, images), None))
            scores = distances(trained.params, images)
            records.append(_record(steps, seed, *scores, accuracy(trained)))
            if seed == setting.seeds[0] and steps == lengths[-1]:
                figures = _figures(setting, trained, names, images)
    metrics = {
        "first_layer_max_px": "layer 1 farthest head (px)",
        "first_layer_min_px": "layer 1 closest head (px)",
        "depth_slope_px": "slope with depth (px/layer)",
        "uniform_px": "uniform attention (px)",
        "test_accuracy": "test accuracy",
    }
    summary = report.summarise(records, ("steps",), tuple(metrics))
    table = report.markdown_table(
        summary, {"steps": "training steps (0: untrained)", **metrics}, percent=("test_accuracy",)
    )
    notes = (
        f"{MODEL.label} with configs/fashion_mnist.py's recipe on the 60k training images; "
        f"distances over {NUM_IMAGES} test images (vit_jax.analysis). What this cannot show: "
        "on a 7×7 grid of 4 px patches uniform attention already sits near the middle of the "
        "possible distances, so 'global' and 'local' heads are close together."
    )
    return report.StudyResult(records, summary, table, figures, notes)


def _figures(setting, trained, names, images) -> list[str]:
    loaded = model_from_params(trained.params)
    out_dir = os.path.join(setting.out_dir, "analysis")
    paths = commands.rollout(trained.params, loaded, names, images, out_dir)
    paths += commands.posemb(trained.params, loaded, out_dir)
    paths += commands.attention_distance(trained.params, loaded, names, images, out_dir)
    paths += commands.filters(trained.params, loaded, out_dir, count=16)
    return [p for p in paths if p.endswith(".png")]


def judge(records) -> evidence.Verdict:
    """CLAIM.rule on the records of the longest runs."""
    short = evidence.too_few_seeds(records)
    if short:
        return short
    final = [r for r in records if r["steps"] == max(r["steps"] for r in records)]
    departure = max(r["largest_departure"] for r in final)
    both = all(
        r["first_layer_max_px"] >= 0.9 * r["uniform_px"]
        and r["first_layer_min_px"] < 0.75 * r["uniform_px"]
        for r in final
    )
    slopes = [r["depth_slope_px"] for r in final if r["depth_slope_px"] is not None]
    slope = evidence.t_interval(slopes, scale=1.0) if slopes else None  # None: one layer.
    slope_up = slope is not None and slope.above_zero
    estimates = {"depth slope": slope} if slope else {}
    findings = [
        f"largest departure of a head from uniform attention: {100 * departure:.0f}%",
        "first layer, farthest / closest head / uniform (px) per seed: "
        + "; ".join(
            f"{r['first_layer_max_px']:.1f} / {r['first_layer_min_px']:.1f} / {r['uniform_px']:.1f}"
            for r in final
        ),
        "slope of the layer mean with depth: "
        + (slope.text("px per layer") if slope else "none (one layer)"),
    ]
    if departure < 0.05:
        findings.append("the heads attend uniformly")
        return evidence.Verdict(evidence.NOT_TESTABLE, findings, estimates)
    if both and slope_up:
        return evidence.Verdict(evidence.HOLDS, findings, estimates)
    if both or slope_up:
        return evidence.Verdict(evidence.PARTLY, findings, estimates)
    return evidence.Verdict(evidence.FAILS, findings, estimates)
