"""Study 8 — the analysis figures of Sec. 4.5 (Fig. 6 and 7).

A ViT on 2×2-pixel patches (a 14×14 grid, so position embeddings and
attention distances have room for structure), pre-trained on Fashion-MNIST
for twice the other studies' steps, analysed through vit_jax.analysis on
Fashion-MNIST test images: attention rollout, position-embedding similarity,
mean attention distance per head and depth (beside uniform attention, which
looks everywhere without looking far), and patch-filter principal components.
"""

import os

import numpy as np

from experiments.mini import report
from experiments.mini.models import vit
from experiments.mini.runs import (
    FASHION_MNIST,
    PRETRAIN_STEPS,
    accuracy,
    preprocessing,
    pretrain_config,
    train,
)
from vit_jax.analysis import commands
from vit_jax.data import local
from vit_jax.infer import model_from_params

TITLE = "Analysis figures (Fig. 6/7)"
CLAIM = (
    "Filters look like basis functions; position embeddings show 2-D row/column structure; "
    "some heads attend globally already in the lowest layers and attention distance grows "
    "with depth; rollout highlights the object."
)
DEFAULT_SEEDS = (0,)
# Four 16-wide heads: Fig. 7 reads the spread of heads within a layer.
MODEL = vit(64, 4, 2).with_options(num_heads=4)
STEPS = 2 * PRETRAIN_STEPS
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
    return 1


def run(setting) -> report.StudyResult:
    seed = setting.seeds[0]
    config = pretrain_config(
        setting, MODEL, dataset=FASHION_MNIST, seed=seed, steps=STEPS, image_size=28
    )
    trained = train(setting, config, f"analysis-{MODEL.label}-s{seed}")
    loaded = model_from_params(trained.params)  # Resolution read from the position table.
    names, images = _test_images(setting)
    out_dir = os.path.join(setting.out_dir, "analysis")
    paths = commands.rollout(trained.params, loaded, names, images, out_dir)
    paths += commands.posemb(trained.params, loaded, out_dir)
    paths += commands.attention_distance(trained.params, loaded, names, images, out_dir)
    paths += commands.filters(trained.params, loaded, out_dir, count=16)
    distance_file = np.load(os.path.join(out_dir, "attention_distance.npz"))
    distances, uniform = distance_file["distance"], float(distance_file["uniform_distance"])
    ratio = np.load(os.path.join(out_dir, "filters.npz"))["explained_variance"]
    records = [
        dict(
            layer=layer + 1,
            mean_distance_px=float(per_head.mean()),
            min_head_px=float(per_head.min()),
            max_head_px=float(per_head.max()),
            uniform_px=uniform,
        )
        for layer, per_head in enumerate(distances)
    ]
    table = report.markdown_table(
        records,
        {
            "layer": "layer",
            "mean_distance_px": "mean attention distance (px)",
            "min_head_px": "closest head (px)",
            "max_head_px": "farthest head (px)",
            "uniform_px": "uniform attention (px)",
        },
    )
    grid = loaded.grid
    farthest = float(np.hypot(*(np.array(grid) - 1))) * 28 / grid[0]
    heads = setting.model(MODEL).overrides["num_heads"]
    test_accuracy = 100 * accuracy(trained)
    notes = (
        f"{MODEL.label} with {heads} heads ({setting.steps(STEPS)} Adam steps at batch 128 "
        f"on the 60k training images, a {grid[0]}×{grid[1]} grid of patches), Fashion-MNIST "
        f"test accuracy {test_accuracy:.2f}%; distances over {NUM_IMAGES} test images. On "
        f"this grid uniform attention has a mean distance of {uniform:.1f} px and the "
        f"farthest two patches are {farthest:.1f} px apart. Filter PCA: the first 3 "
        f"components explain {', '.join(f'{100 * r:.1f}%' for r in ratio[:3])} of the variance."
    )
    plots = [p for p in paths if p.endswith(".png")]
    return report.StudyResult(records, records, table, plots, notes)
