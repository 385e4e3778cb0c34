"""Study 1 — pre-training data size (Sec. 4.3, Fig. 4).

Fig. 4's protocol at CPU scale: ViT and BiT ResNet pre-trained on the first
1k, 3k, 10k or all 30k training images of Fashion-MNIST's classes 0-4
(T-shirt/top, Trouser, Pullover, Dress, Coat), every subset with the same
hyper-parameters and the same number of steps (no regularisation tuned per
size), and scored by 5-shot linear probes on classes 5-9 (Sandal, Shirt,
Sneaker, Bag, Ankle boot), which pre-training never sees. The trainer probes
the frozen representation periodically; each run reports its best probe
(the paper's early stopping: "the best validation accuracy achieved during
training") and its final one. Digits 5-shot is a second, cross-domain target.
"""

import glob
import os

import numpy as np

from experiments.mini import report
from experiments.mini.models import bit, vit
from experiments.mini.runs import DIGITS, EVAL_BATCH, FASHION_MNIST, pretrain_config, train
from vit_jax.evaluate import fewshot
from vit_jax.models import get_model

TITLE = "Pre-training data size (Fig. 4)"
CLAIM = (
    "Pre-trained on small subsets, ViT overfits more than BiT ResNets and transfers worse "
    "(few-shot linear accuracy with early stopping); with more pre-training data it gains "
    "more than the ResNets and overtakes them."
)
DEFAULT_SEEDS = (0, 1)  # What fits the hour on the shared 2-core VM (STEPS).
MODELS = (vit(64, 4, 4), bit((1, 1, 1), 0.5))
UPSTREAM = "fashion_mnist/classes_0-4"  # Pre-training: 30k train / 5k test images.
TARGET = "fashion_mnist/classes_5-9"  # Few-shot transfer: the other five classes.
SIZES = (1_000, 3_000, 10_000, 30_000)
FULL_SIZE = 30_000  # All training images of classes 0-4.
# Sized from measurements on the shared 2-core VM: ViT-64x4/4 trains at
# ~400 img/s, BiT-R1-1-1x0.5 at ~700 img/s whatever the batch (32-128), and a
# probe of 6k images takes 6 s and 3.4 s. 3,000 steps of 32 images (96k a run)
# are what 16 runs (2 seeds) fit in about an hour; a smaller batch buys steps
# (and probes along the way), not images.
STEPS = 3_000
BATCH = 32
PROBES = 10  # Few-shot evaluations per run, evenly spaced, the last at the end.
SHOTS = 5
# The probe's support is drawn (three draws, as fewshot.evaluate does) from the
# first 1,000 training images of classes 5-9, ~200 a class; its score is on
# their 5,000 test images.
TARGET_SUPPORT = "train[:1000]"
SIZE = 28
METRICS = {
    "target_5shot_best": "best 5-shot classes 5-9",
    "target_5shot_final": "final 5-shot classes 5-9",
    "best_step": "step of best",
    "digits_5shot": "final 5-shot digits",
    "test_accuracy": "classes 0-4 test",
}
ACCURACIES = tuple(k for k in METRICS if k != "best_step")


def _tag(dataset: str) -> str:
    return f"fewshot/{dataset}/{SHOTS}shot"


def pretraining_config(setting, model, size: int, seed: int):
    """Table 3's recipe (runs.pretrain_config), identical for every subset but the split."""
    # Built for the parent, whose data_dir it sets, then narrowed to the classes.
    config = pretrain_config(
        setting,
        model,
        dataset=FASHION_MNIST,
        seed=seed,
        steps=STEPS,
        image_size=SIZE,
        batch_size=BATCH,
    )
    classes = 5
    config.dataset = UPSTREAM
    config.train_split = "train" if size == FULL_SIZE or setting.toy else f"train[:{size}]"
    config.pp_train = f"flip_lr|value_range(-1,1)|onehot({classes})"
    config.pp_eval = f"value_range(-1,1)|onehot({classes})"
    config.fewshot_every = max(config.total_steps // PROBES, 1)
    config.fewshot_shots = (SHOTS,)
    # Toy data have 6 training images a class: all of them are the support.
    config.fewshot_datasets = ((TARGET, setting.pick(TARGET_SUPPORT, "train"), "test"),)
    return config


def logged_scalars(workdir: str) -> dict[str, dict[int, float]]:
    """tag → {step: value} of every scalar the trainer wrote to the run's
    TensorBoard events. A resumed or reused run adds an events file; later
    files win (the trainer is deterministic, so they agree anyway)."""
    import tensorflow as tf

    values: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField("tensor"):  # Scalars; the hparams are strings.
                    array = tf.make_ndarray(value.tensor)
                    if array.ndim == 0 and array.dtype.kind == "f":
                        values.setdefault(value.tag, {})[event.step] = float(array)
    return values


def digits_5shot(setting, trained) -> float:
    """5-shot probe of the final representation on digits (resized to 28 px):
    once per run, where a periodic one would add a third to every probe."""
    config = trained.config
    encoder = get_model(config.model_name, None, **config.model)  # Pre-logits, no head.
    data = fewshot.data_from_registry(
        DIGITS,
        "train",
        "test",
        preprocess=f"resize({SIZE})|value_range(-1,1)",
        batch_size=setting.batch(EVAL_BATCH),
    )
    metrics = fewshot.evaluate(
        fewshot.representation_fn(encoder), trained.params, {DIGITS: data}, shots=(SHOTS,)
    )
    return float(metrics[_tag(DIGITS)])


def score(setting, trained) -> dict:
    """Best and final probe of the run, the best's step, the final upstream
    test accuracy and digits probe, and the probe curve (for the plot)."""
    scalars = logged_scalars(trained.workdir)
    last = int(trained.config.total_steps)
    target = scalars[_tag(TARGET)]
    if last not in target:  # The trainer saved a checkpoint and returned early (SIGTERM).
        raise SystemExit(f"{trained.workdir} stopped before step {last}: run the command again.")
    best_step = max(sorted(target), key=target.get)  # The earliest of equal bests.
    return dict(
        target_5shot_best=target[best_step],
        target_5shot_final=target[last],
        best_step=best_step,
        digits_5shot=digits_5shot(setting, trained),
        test_accuracy=scalars["test/accuracy"][last],
        target_curve=sorted(target.items()),
    )


def planned_runs(setting) -> int:
    return len(setting.subset(MODELS)) * len(setting.pick(SIZES, SIZES[-1:])) * len(setting.seeds)


def run(setting) -> report.StudyResult:
    records = []
    for model in setting.subset(MODELS):
        for size in setting.pick(SIZES, SIZES[-1:]):
            for seed in setting.seeds:
                config = pretraining_config(setting, model, size, seed)
                trained = train(setting, config, f"datasize-{model.label}-n{size}-s{seed}")
                records.append(
                    dict(model=model.label, images=size, seed=seed, **score(setting, trained))
                )
    summary = report.summarise(records, ("model", "images"), tuple(METRICS))
    table = report.markdown_table(
        summary, {"model": "model", "images": "pre-training images", **METRICS}, percent=ACCURACIES
    )
    prefix = f"{setting.out_dir}/data_size"
    plots = report.metric_line_plots(
        prefix,
        summary,
        {k: METRICS[k] for k in ("target_5shot_best", "target_5shot_final", "test_accuracy")},
        x="images",
        series="model",
        xlabel="pre-training images (Fashion-MNIST classes 0-4)",
    )
    plots.append(curve_plot(f"{prefix}_curves.png", records))
    return report.StudyResult(records, summary, table, plots, notes(setting))


def curve_plot(path: str, records: list[dict]) -> str:
    """5-shot accuracy on classes 5-9 against the step, mean over seeds: one
    panel per model, one line per subset size (where the small subsets peak)."""
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in records))
    figure, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    for panel, model in zip(axes[0], models, strict=True):
        for size in sorted({r["images"] for r in records}):
            curves = [
                r["target_curve"] for r in records if r["model"] == model and r["images"] == size
            ]
            steps = [step for step, _ in curves[0]]
            mean = np.mean([[value for _, value in curve] for curve in curves], axis=0)
            panel.plot(steps, 100 * mean, marker=".", label=f"{size:,} images")
        panel.set_title(model)
        panel.set_xlabel("pre-training step")
        panel.set_ylabel("5-shot accuracy, classes 5-9 (%)")
        panel.grid(alpha=0.3)
        panel.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def notes(setting) -> str:
    steps, batch = setting.steps(STEPS), setting.batch(BATCH)
    every = max(steps // PROBES, 1)
    epochs = ", ".join(f"{size // 1000}k: {steps * batch / size:.2g}" for size in SIZES)
    return (
        f"Pre-training on `{UPSTREAM}` (the first N training images of Fashion-MNIST's "
        "T-shirt/top, Trouser, Pullover, Dress, Coat), for every model and size the same "
        f"{steps} Adam steps at batch {batch} with Table 3's recipe (lr 1e-3, weight decay 0.1, "
        "10% warm-up then linear decay, clipping at 1) and horizontal flips; no regularisation "
        f"tuned per size. Epochs per subset: {epochs}. "
        f"The trainer probes the frozen pre-logits every {every} steps ({PROBES} probes, the last "
        f"at the end): {SHOTS}-shot ridge regression (vit_jax.evaluate.fewshot, mean of three "
        f"shot draws) on `{TARGET}` (Sandal, Shirt, Sneaker, Bag, Ankle boot: classes "
        f"pre-training never sees; support from `{TARGET_SUPPORT}` of their training images, "
        "scored on their 5,000 test images). "
        "'best' is the highest probe of a run and 'step of best' where it happened; the best "
        "is selected on the same test images it reports, so it is slightly optimistic, as the "
        "paper's early stopping on its validation accuracy is. 'final' is the probe at the last "
        "step; 'final 5-shot digits' probes the last step's representation on digits (resized "
        "to 28 px; 5 shots of the 1,437 training digits, scored on the 360 test digits); "
        "'classes 0-4 test' is the upstream accuracy on those classes' 5,000 test images at "
        "the end. Seeds: " + ", ".join(map(str, setting.seeds)) + " (model initialisation and "
        "data order; the probe's shot draws are the same for every run)."
    )
