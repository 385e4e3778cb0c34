"""Study 8 — the analysis figures of Sec. 4.5 (Fig. 6 and 7) for the best
mini ViT: the largest ViT of the compute study (its pre-training run is
reused when that study ran first), through vit_jax.analysis on Fashion-MNIST
test images: attention rollout, position-embedding similarity, mean
attention distance per head and depth, and patch-filter principal components."""

import os

import numpy as np

from experiments.mini import report
from experiments.mini.compute import MODELS, pretraining_config
from experiments.mini.runs import FASHION_MNIST, accuracy, preprocessing, train
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
MODEL = [m for m in MODELS if m.family == "ViT"][-1]
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
    return 1  # The compute study's largest ViT (reused when that study has run).


def run(setting) -> report.StudyResult:
    seed = setting.seeds[0]
    config = pretraining_config(setting, MODEL, seed)
    trained = train(setting, config, f"compute-{MODEL.label}-s{seed}")
    loaded = model_from_params(trained.params)  # Resolution read from the position table.
    names, images = _test_images(setting)
    out_dir = os.path.join(setting.out_dir, "analysis")
    paths = commands.rollout(trained.params, loaded, names, images, out_dir)
    paths += commands.posemb(trained.params, loaded, out_dir)
    paths += commands.attention_distance(trained.params, loaded, names, images, out_dir)
    paths += commands.filters(trained.params, loaded, out_dir, count=16)
    distances = np.load(os.path.join(out_dir, "attention_distance.npz"))["distance"]
    ratio = np.load(os.path.join(out_dir, "filters.npz"))["explained_variance"]
    records = [
        dict(
            layer=layer + 1,
            mean_distance_px=float(per_head.mean()),
            min_head_px=float(per_head.min()),
            max_head_px=float(per_head.max()),
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
        },
    )
    notes = (
        f"{MODEL.label}, Fashion-MNIST test accuracy {100 * accuracy(trained):.2f}%; distances "
        f"over {NUM_IMAGES} test images (28 px images: the farthest two patches are ~34 px "
        f"apart). Filter PCA: the first 3 components explain "
        f"{', '.join(f'{100 * r:.1f}%' for r in ratio[:3])} of the variance."
    )
    plots = [p for p in paths if p.endswith(".png")]
    return report.StudyResult(records, records, table, plots, notes)
