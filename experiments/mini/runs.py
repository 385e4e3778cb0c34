"""Configs, training and evaluation shared by the studies.

Every run is a config of the project's schema (`vit_jax.config.default_config`)
trained in-process by `vit_jax.train.train_and_evaluate`, then scored by
`vit_jax.evaluate` (top-1 accuracy, few-shot linear probe). A run's work
directory is named by a hash of its config and of the code, so studies that
need the same pre-training share it, and re-running a study resumes or reuses
finished runs instead of training them again (the trainer is deterministic
given the config), but never a run that other code made.

A finished run also leaves a record, a small JSON file beside the study's
results (RECORDS/<code fingerprint>/<processor>/<run key>.json: its logged
curves, its training time and every score taken of it). A study that finds
the records of its runs takes their numbers from them without the work
directories, so a study can be carried on from another checkout of the same
code, on the same kind of processor, with its records committed; a run whose
parameters are still needed (a fine-tuning not yet recorded starts from
them) is trained again, to the same numbers.
"""

import dataclasses
import functools
import hashlib
import json
import os
import time

import jax
import ml_collections

from experiments import machine
from experiments.mini import provenance
from experiments.mini.models import MiniModel, shrink
from experiments.vtab import accuracy_on_test_split
from vit_jax.config import default_config
from vit_jax.evaluate import fewshot
from vit_jax.train import train_and_evaluate
from vit_jax.train_state import Checkpoints

FASHION_MNIST = "fashion_mnist"
DIGITS = "digits"
NATIVE_SIZE = {FASHION_MNIST: 28, DIGITS: 8}
NUM_CLASSES = 10  # Both data sets.
TOY_STEPS = 2
TOY_BATCH = 16  # Divisible by the 8 simulated devices of the test suite.
EVAL_BATCH = 512
# The studies' pre-training: configs/fashion_mnist.py's recipe (Adam, warm-up
# then cosine decay, decoupled weight decay, clipping at 1) on Fashion-MNIST's
# classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat; 30k training
# images), so that classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) stay a
# target pre-training never saw. 1,880 steps at batch 128 are 8 epochs of those
# 30k images: as many images as the config's 30-epoch run on all 60k had seen
# at its 82.2% point (it ends at 91.59%), so the studies' models are not
# fully trained, a choice of budget. Augmentation: the flip alone. The config's
# 2 px shift pays off only over a long schedule: at that point of its run the
# flip alone was at 85.4%, and the two met at 88.2% after 12.8 epochs.
UPSTREAM = "fashion_mnist/classes_0-4"
TARGET = "fashion_mnist/classes_5-9"
UPSTREAM_CLASSES = TARGET_CLASSES = 5
PRETRAIN_STEPS = 1_880
PRETRAIN_BATCH = 128
RECORDS = "runs"  # Under the study's results folder.


@dataclasses.dataclass
class Progress:
    """A study's way through its training runs, for a "run k of N, ETA" line
    after each. A reused run (finished by an earlier invocation) takes seconds,
    so the ETA extrapolates from the runs that trained."""

    planned: int  # The study's planned_runs(setting).
    started: float = dataclasses.field(default_factory=time.perf_counter)
    done: int = 0
    reused: int = 0
    reused_seconds: float = 0.0
    # Run key → its training time over every invocation that trained it.
    training_seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def record(self, seconds: float, reused: bool, trained: "Trained") -> str:
        self.done += 1
        if trained.key not in self.training_seconds:
            self.training_seconds[trained.key] = trained.record["training_seconds"]
        if reused:
            self.reused += 1
            self.reused_seconds += seconds
        elapsed = time.perf_counter() - self.started
        line = (
            f"run {self.done} of {self.planned} done ({self.reused} reused), "
            f"{elapsed / 60:.1f} min so far"
        )
        left, trained = self.planned - self.done, self.done - self.reused
        if left > 0 and trained:
            per_run = (elapsed - self.reused_seconds) / trained  # Scoring included.
            eta = left * per_run / 60
            line += f"; ETA {eta:.{1 if eta < 10 else 0}f} min if the other {left} train"
        return line


@dataclasses.dataclass(frozen=True)
class Setting:
    """What one invocation of a study runs at: `toy` swaps every model for its
    family's smallest member and every schedule for TOY_STEPS steps."""

    toy: bool
    seeds: tuple[int, ...]
    out_dir: str
    work_dir: str
    data_dir: str | None  # Fashion-MNIST IDX folder; None: Debian's folder or TFDS.
    progress: Progress | None = None  # Set by __main__ once the study is known.
    # Work directory → its run, for a run trained again for its parameters
    # to find the run it starts from.
    runs: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def records_dir(self) -> str:
        return os.path.join(self.out_dir, RECORDS, _code_fingerprint(), _processor())

    def pick(self, real, toy):
        return toy if self.toy else real

    def model(self, model: MiniModel) -> MiniModel:
        return shrink(model) if self.toy else model

    def steps(self, real: int) -> int:
        return self.pick(real, TOY_STEPS)

    def batch(self, real: int) -> int:
        return self.pick(real, TOY_BATCH)

    def subset(self, variants):
        """All `variants`; at toy size only the first and the last, which keeps
        the smoke test short while every loop, table and plot still runs."""
        variants = tuple(variants)
        return variants[:1] + variants[-1:] if self.toy and len(variants) > 1 else variants


def _parent(dataset: str) -> str:
    return dataset.split("/")[0]


def num_classes(dataset: str) -> int:
    return UPSTREAM_CLASSES if "/classes_" in dataset else NUM_CLASSES


def preprocessing(dataset: str, image_size: int, augment: str = "") -> str:
    """Resize (only when the size differs from the native one), `augment`
    (ops such as 'flip_lr'), [-1, 1], one-hot."""
    ops = []
    if image_size != NATIVE_SIZE[_parent(dataset)]:
        ops.append(f"resize({image_size})")
    if augment:
        ops.append(augment)
    ops += ["value_range(-1,1)", f"onehot({num_classes(dataset)})"]
    return "|".join(ops)


def baseline_recipe():
    """configs/fashion_mnist.py: the trained from-scratch baseline every study starts from."""
    from configs import fashion_mnist

    return fashion_mnist.get_config()


def base_config(
    setting: Setting,
    model: MiniModel,
    *,
    dataset: str,
    seed: int,
    steps: int,
    image_size: int,
    train_split: str = "train",
    test_split: str = "test",
    batch_size: int = 128,
):
    """The parts every run shares: model, data, length, cadences."""
    model = setting.model(model)
    config = default_config()
    config.model_name = model.model_name
    config.model = ml_collections.ConfigDict(model.overrides)
    config.dataset = dataset
    config.data_dir = setting.data_dir if _parent(dataset) == FASHION_MNIST else None
    config.train_split = train_split
    config.test_split = test_split
    config.image_size = image_size
    augment = "flip_lr" if _parent(dataset) == FASHION_MNIST else ""
    config.pp_train = preprocessing(dataset, image_size, augment)
    config.pp_eval = preprocessing(dataset, image_size)
    config.batch_size = setting.batch(batch_size)
    config.eval_batch_size = setting.batch(EVAL_BATCH)
    config.total_steps = setting.steps(steps)
    config.seed = seed
    config.log_every = max(config.total_steps // 10, 1)
    config.checkpoint_every = 0  # Runs are minutes long: only the final checkpoint.
    config.keep_checkpoints = 1
    return config


def pretrain_config(setting: Setting, model: MiniModel, *, lr: float | None = None, **kwargs):
    """The baseline's recipe (configs/fashion_mnist.py): Adam (0.9, 0.999),
    decoupled weight decay, warm-up over an eighth of the steps (the config's
    one epoch of eight) then its decay, clipping at 1; `lr` overrides its rate.
    Defaults: UPSTREAM, PRETRAIN_STEPS at PRETRAIN_BATCH, 28 px."""
    kwargs = dict(
        dict(dataset=UPSTREAM, steps=PRETRAIN_STEPS, image_size=28, batch_size=PRETRAIN_BATCH),
        **kwargs,
    )
    config = base_config(setting, model, **kwargs)
    recipe = baseline_recipe()
    for field in ("optimizer", "lr", "b1", "b2", "weight_decay", "lr_decay", "grad_clip_norm"):
        if field in recipe:
            setattr(config, field, recipe[field])
    if lr is not None:
        config.lr = lr
    config.warmup_steps = config.total_steps // 8
    return config


def finetune_config(setting: Setting, model: MiniModel, *, pretrained: str, lr=0.01, **kwargs):
    """Table 4's recipe: SGD momentum 0.9, no weight decay, cosine decay after a
    warm-up (5% of the steps), clipping at 1; starts from `pretrained` (.npz)."""
    config = base_config(setting, model, **kwargs)
    config.optimizer = "sgd"
    config.momentum = 0.9
    config.lr = lr
    config.weight_decay = 0.0
    config.warmup_steps = config.total_steps // 20
    config.lr_decay = "cosine"
    config.grad_clip_norm = 1.0
    config.pretrained = pretrained
    return config


@dataclasses.dataclass
class Trained:
    """A finished run: its config, work directory, record (see the module's
    docstring) and, once something needs them, its final (host) parameters."""

    label: str
    config: ml_collections.ConfigDict
    workdir: str  # "" for an untrained model.
    key: str  # The record's name: the run key.
    record: dict
    setting: Setting
    _params: dict | None = None

    @property
    def params(self) -> dict:
        if self._params is None:
            self._params = _parameters(self)
        return self._params

    @property
    def npz(self) -> str:
        """The official-format export the trainer writes; fine-tuning starts from it."""
        return os.path.join(self.workdir, "params.npz")


@functools.cache
def _code_fingerprint() -> str:
    return provenance.code_fingerprint(provenance.REPOSITORY)


@functools.cache
def _processor() -> str:
    """This machine's CPU model and core count as a folder name. XLA compiles
    for the processor it runs on, and a run trained on another gives other
    numbers (see experiments/README.md), so records are read only where they
    were made: a run trained again for its parameters matches its record."""
    hardware = machine.hardware()
    name = f"{hardware['cpu']} {hardware['cores']} cores".lower()
    return "-".join("".join(c if c.isalnum() else " " for c in name).split())


def _run_key(config) -> str:
    text = config.to_json_best_effort(sort_keys=True) + _code_fingerprint()
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _record_path(setting: Setting, key: str) -> str:
    return os.path.join(setting.records_dir, f"{key}.json")


def _load_record(setting: Setting, key: str) -> dict | None:
    path = _record_path(setting, key)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _save_record(trained: Trained) -> None:
    """Written whole to a temporary file, then renamed over the old one: a
    study stopped mid-write leaves the previous record, never half of one."""
    path = _record_path(trained.setting, trained.key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(trained.record, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def _train_in_workdir(trained: Trained):
    """Trains (or resumes, or reuses) the run in its work directory; its final
    parameters. The run it fine-tunes from is made first when its export is
    missing (a run recorded by another invocation, its work directory gone)."""
    config = trained.config
    pretrained = config.get("pretrained")
    if pretrained and not os.path.exists(pretrained):
        source = trained.setting.runs.get(os.path.dirname(pretrained))
        if source is not None:
            source.params  # noqa: B018 -- trains it, writing the export.
    state = train_and_evaluate(config, trained.workdir)
    stopped_at = Checkpoints.latest_step_in(os.path.join(trained.workdir, "checkpoints"))
    if stopped_at < config.total_steps:
        # The trainer returns early on SIGTERM, its checkpoint saved: a study
        # must not go on to score a half-trained model.
        raise SystemExit(
            f"[mini] {trained.label} stopped at step {stopped_at} of {config.total_steps} "
            "(interrupted): run the same command again to resume it."
        )
    return jax.device_get(state.params)


def _parameters(trained: Trained) -> dict:
    if not trained.workdir:  # An untrained model: its initialisation.
        import jax.numpy as jnp

        from vit_jax.models import get_model

        config = trained.config
        module = get_model(config.model_name, num_classes(config.dataset), **config.model)
        size = config.image_size
        params = module.init(jax.random.PRNGKey(config.seed), jnp.zeros((1, size, size, 1)))
        return jax.device_get(params["params"])
    # Recorded by an earlier invocation: its final checkpoint restores, or,
    # its work directory gone, the run is trained again.
    checkpoints = os.path.join(trained.workdir, "checkpoints")
    if Checkpoints.latest_step_in(checkpoints) < trained.config.total_steps:
        print(f"[mini] {trained.label}: training again for its parameters", flush=True)
    return _train_in_workdir(trained)


def train(setting: Setting, config, label: str) -> Trained:
    """The run of `config`: taken from its record when an earlier invocation
    finished it, else trained (or resumed, or reused) in its own work
    directory and recorded."""
    # Named by the config and the code: studies asking for the same run share
    # it, and a run made by other code (an earlier revision) is never reused.
    key = _run_key(config)
    workdir = os.path.join(setting.work_dir, key)
    print(
        f"[mini] {label}: {config.total_steps} steps of {config.batch_size} on "
        f"{config.dataset}[{config.train_split}] → {workdir}",
        flush=True,
    )
    record = _load_record(setting, key)
    trained = Trained(label, config, workdir, key, record or {}, setting)
    setting.runs[workdir] = trained
    start = time.perf_counter()
    if record is not None:
        reused, how = True, f"recorded in {_record_path(setting, key)}"
    else:
        finished = Checkpoints.latest_step_in(os.path.join(workdir, "checkpoints"))
        reused = finished >= config.total_steps
        trained._params = _train_in_workdir(trained)
        trained.record.update(
            label=label,
            training_seconds=training_seconds(workdir),
            hardware=machine.hardware(),
            finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            revision=provenance.code_revision(provenance.REPOSITORY),
            scalars={tag: sorted(curve.items()) for tag, curve in logged_scalars(workdir).items()},
            scores={},
        )
        _save_record(trained)
        how = "reused" if reused else f"{time.perf_counter() - start:.0f} s"
    if setting.progress is not None:
        line = setting.progress.record(time.perf_counter() - start, reused, trained)
        print(f"[mini] {label}: {how}; {line}", flush=True)
    return trained


def _scored(trained: Trained, name: str, score) -> float:
    """The run's score `name`: from its record, else `score()`, then recorded."""
    scores = trained.record.setdefault("scores", {})
    if name not in scores:
        scores[name] = float(score())
        _save_record(trained)
    return scores[name]


def curves(trained: Trained) -> dict[str, dict[int, float]]:
    """tag → {step: value} of the scalars the run's trainer logged (its record's)."""
    return {tag: dict(points) for tag, points in trained.record.get("scalars", {}).items()}


def accuracy(trained: Trained, split: str | None = None) -> float:
    """Top-1 accuracy on `split` (default: the run's test split), by vit_jax.evaluate."""
    config = trained.config
    if split is not None:
        config = config.copy_and_resolve_references()
        config.test_split = split

    return _scored(
        trained,
        f"accuracy/{config.test_split}",
        lambda: accuracy_on_test_split(config, trained.params),
    )


def fewshot_accuracy(setting: Setting, trained: Trained, dataset: str, shots: int = 5) -> float:
    """`shots`-per-class linear-probe accuracy of the frozen representation on
    `dataset` (vit_jax.evaluate.fewshot; mean over its three shot draws)."""
    from vit_jax.models import get_model

    config = trained.config
    # Fashion-MNIST: 5k support images are plenty for 25 shots and keep it quick.
    fashion = _parent(dataset) == FASHION_MNIST
    train_split = setting.pick("train[:5000]", "train") if fashion else "train"

    def probe():
        model = get_model(config.model_name, num_classes(config.dataset), **config.model)
        data = fewshot.data_from_registry(
            dataset,
            train_split,
            "test",
            preprocess=preprocessing(dataset, config.image_size),
            batch_size=setting.batch(EVAL_BATCH),
            data_dir=setting.data_dir if fashion else None,
        )
        metrics = fewshot.evaluate(
            fewshot.representation_fn(model), trained.params, {dataset: data}, shots=(shots,)
        )
        return metrics[f"fewshot/{dataset}/{shots}shot"]

    return _scored(trained, f"fewshot/{dataset}[{train_split}]/{shots}shot", probe)


def score_pretrained(setting: Setting, trained: Trained) -> dict[str, float]:
    """The upstream test accuracy and the 5-shot probe of the frozen
    representation on TARGET (classes pre-training never saw)."""
    return {
        "test_accuracy": accuracy(trained),
        "target_5shot": fewshot_accuracy(setting, trained, TARGET),
    }


def untrained(setting: Setting, config) -> Trained:
    """The model of `config` as initialised (its seed), not trained: the
    baseline a probe of trained features has to beat. Its scores are recorded
    under the run key of `config` with '-untrained'."""
    key = _run_key(config) + "-untrained"
    record = _load_record(setting, key) or {"label": "untrained", "scores": {}}
    return Trained("untrained", config, "", key, record, setting)


def logged_scalars(workdir: str) -> dict[str, dict[int, float]]:
    """tag → {step: value} of every scalar the trainer wrote to the run's
    TensorBoard events. A resumed or reused run adds an events file; later
    files win (the trainer is deterministic, so they agree anyway)."""
    import glob

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


def training_seconds(workdir: str) -> float:
    """Wall time the run's training took over every invocation that worked on
    it, an interrupted one included: the span from the first to the last event
    of each TensorBoard events file (one a trainer start; compilation,
    evaluation and checkpoints included). A run reused whole adds a file with
    no span beyond its final evaluation."""
    import glob

    import tensorflow as tf

    total = 0.0
    for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
        times = [event.wall_time for event in tf.compat.v1.train.summary_iterator(path)]
        total += max(times) - min(times) if times else 0.0
    return total


def images_seen(config) -> int:
    return int(config.total_steps) * int(config.batch_size)
