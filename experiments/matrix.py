"""The paper's experiment matrix: every run, as a config file, its variant
argument and overrides, with the published number of its cell.

A fine-tuning run reads the params.npz that its pre-training run exports into
its own work directory (`pretrained_path`), so an experiment runs in order.
"""

import dataclasses
import importlib
import itertools
from pathlib import PurePosixPath

from configs import (
    classifier_ablation,
    data_size_study,
    posemb_ablation,
    vit_finetune,
    vit_pretrain,
    vit_vtab,
)
from experiments import paper_results as paper

WORKDIR_ROOT = "workdirs/paper"
# The published-number name of Table 2's pre-training cost (its last row).
TABLE_2_CORE_DAYS = "TPUv3-core-days"


@dataclasses.dataclass(frozen=True)
class Run:
    name: str  # Unique within its experiment; also its work directory's name.
    config_file: str  # configs/<family>.py
    arg: str = ""  # The config's variant argument.
    overrides: tuple[str, ...] = ()  # field=value, applied after get_config(arg).
    published: tuple[tuple[str, float], ...] = ()  # (what, number) from the paper.

    @property
    def config_spec(self) -> str:
        return f"{self.config_file}:{self.arg}" if self.arg else self.config_file

    def load_config(self):
        """get_config(arg) of the config file (overrides not applied)."""
        module = ".".join(PurePosixPath(self.config_file).with_suffix("").parts)
        return importlib.import_module(module).get_config(self.arg or None)


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    runs: tuple[Run, ...]


def pretrained_path(experiment: str, run: str, root: str = WORKDIR_ROOT) -> str:
    return f"{root}/{experiment}/{run}/params.npz"


def _pretrain_run(model, dataset, epochs, published=()) -> Run:
    return Run(
        f"{model}-{dataset}-{epochs}ep",
        "configs/vit_pretrain.py",
        f"model={model},dataset={dataset},epochs={epochs}",
        published=published,
    )


def _table_3() -> Experiment:
    runs = []
    for model, dataset, epochs, *_ in vit_pretrain.rows():
        cell = paper.APP_TABLE_6.get(model, {}).get(epochs) if dataset == "jft" else None
        published = (("ImageNet top-1", cell[0]), ("exaFLOPs", cell[1])) if cell else ()
        runs.append(_pretrain_run(model, dataset, epochs, published))
    return Experiment("table3", "Pre-training, every row of Table 3", tuple(runs))


def _imagenet_finetune(experiment: str, pre: Run, model: str, published) -> Run:
    """The ImageNet fine-tuning (384 px, Table 4's recipe) of pre-training run `pre`."""
    return Run(
        f"{pre.name}-imagenet",
        "configs/vit_finetune.py",
        f"model={model},dataset=imagenet2012,pretrained={pretrained_path(experiment, pre.name)}",
        published=(published,),
    )


def _scaling() -> Experiment:
    runs = []
    for model, by_epochs in paper.APP_TABLE_6.items():
        for epochs, (top1, exaflops) in by_epochs.items():
            pre = _pretrain_run(model, "jft", epochs, (("exaFLOPs", exaflops),))
            runs.append(pre)
            runs.append(_imagenet_finetune("scaling", pre, model, ("ImageNet top-1", top1)))
    return Experiment(
        "scaling", "Scaling study (Fig. 5, App. Table 6): JFT pre-training, ImageNet", tuple(runs)
    )


_TABLE_2_DATASETS = ("imagenet2012", "cifar10", "cifar100", "oxford_iiit_pet", "oxford_flowers102")


def _table_2() -> Experiment:
    runs = []
    for column, (model, dataset, epochs) in paper.TABLE_2_PRETRAINING.items():
        index = paper.TABLE_2_COLUMNS.index(column)
        pre = _pretrain_run(
            model, dataset, epochs, ((TABLE_2_CORE_DAYS, paper.TABLE_2["tpuv3_core_days"][index]),)
        )
        runs.append(pre)
        checkpoint = pretrained_path("table2", pre.name)
        for target in _TABLE_2_DATASETS:
            # "For ImageNet results in Table 2, we fine-tuned at higher resolution
            # ... and also used Polyak & Juditsky (1992) averaging": the other
            # columns are the plain Table 4 recipe at 384 px.
            setting = ",table2=true" if target == "imagenet2012" else ""
            runs.append(
                Run(
                    f"{pre.name}-{target}",
                    "configs/vit_finetune.py",
                    f"model={model},dataset={target}{setting},pretrained={checkpoint}",
                    published=((f"{target} top-1", paper.TABLE_2[target][index]),),
                )
            )
        for task in vit_vtab.TASKS:
            runs.append(
                Run(
                    f"{pre.name}-vtab-{task}",
                    "configs/vit_vtab.py",
                    f"model={model},task={task},pretrained={checkpoint}",
                    published=(("VTAB mean of 19 tasks", paper.TABLE_2["vtab"][index]),),
                )
            )
    return Experiment("table2", "Comparison to the state of the art (Table 2)", tuple(runs))


def _table_4_sweep() -> Experiment:
    """The lr selection of Table 4 on the held-out splits, from a ViT-B/16 on ImageNet-21k."""
    pre = _pretrain_run("ViT-B_16", "imagenet21k", 90)
    checkpoint = pretrained_path("table4", pre.name)
    runs = [pre]
    for dataset, (_, sweep) in vit_finetune.TABLE_4.items():
        for lr in sweep:
            runs.append(
                Run(
                    f"{pre.name}-{dataset}-lr{lr}",
                    "configs/vit_finetune.py",
                    f"model=ViT-B_16,dataset={dataset},lr={lr},holdout=true,pretrained={checkpoint}",
                )
            )
    return Experiment("table4", "Fine-tuning lr sweeps on held-out data (Table 4)", tuple(runs))


# Fig. 3's regularisation arguments, and how a run's name spells them.
_SWEEP_ABBREVIATIONS = {"weight_decay": "wd", "dropout": "do", "label_smoothing": "ls"}


def _regularisation_points():
    """(argument, name suffix) of every point of Fig. 3's regularisation grid."""
    keys = data_size_study.REGULARISATION_KEYS
    grids = (data_size_study.REGULARISATION_SWEEP[key] for key in keys)
    for values in itertools.product(*grids):
        pairs = tuple(zip(keys, values, strict=True))
        yield (
            ",".join(f"{key}={value}" for key, value in pairs),
            "".join(f"-{_SWEEP_ABBREVIATIONS[key]}{value}" for key, value in pairs),
        )


def _trained_by_table_3(model: str, dataset: str) -> bool:
    return any(row[:2] == (model, dataset) for row in vit_pretrain.rows())


# Work-directory names that differ from another model's only in case (ViT-b_32,
# ViT-B_32) would share a directory on a case-insensitive file system.
_RUN_LABELS = {"ViT-b_32": "ViT-b_32-half-width"}


def _data_size() -> Experiment:
    """Fig. 3: each (model, dataset) that Table 5 reports and Table 3 trains, the
    regularisation grid on ImageNet and ImageNet-21k (the Table 3 row on JFT),
    every point fine-tuned on ImageNet. Fig. 4: each model on each JFT subset
    with one config but the training split, probed 5-shot during training."""
    runs = []
    for data in data_size_study.FIG_3_DATA:
        points = (("", ""),) if data == "jft" else tuple(_regularisation_points())
        what = "ImageNet top-1 (Table 5" + (")" if data == "jft" else ", best of the sweep)")
        for model in data_size_study.FIG_3_MODELS:
            top1 = paper.TABLE_5_IMAGENET[data].get(model)
            if top1 is None or not _trained_by_table_3(model, data):
                continue
            for point, suffix in points:
                pre = Run(
                    f"fig3-{model}-{data}{suffix}",
                    "configs/data_size_study.py",
                    f"model={model},data={data}" + (f",{point}" if point else ""),
                )
                runs.append(pre)
                runs.append(_imagenet_finetune("data_size", pre, model, (what, top1)))
    for model in data_size_study.FIG_4_MODELS:
        for data in data_size_study.FIG_4_DATA:
            runs.append(
                Run(
                    f"fig4-{_RUN_LABELS.get(model, model)}-{data}",
                    "configs/data_size_study.py",
                    f"model={model},data={data}",
                )
            )
    return Experiment(
        "data_size",
        "Pre-training data size (Fig. 3: ImageNet/21k/JFT, regularisation swept; "
        "Fig. 4: JFT subsets, one setting, best 5-shot)",
        tuple(runs),
    )


def _posemb() -> Experiment:
    runs = tuple(
        Run(
            f"ViT-B_16-posemb-{kind}",
            "configs/posemb_ablation.py",
            f"posemb={kind}",
            published=(("5-shot linear ImageNet", paper.TABLE_8[kind]),),
        )
        for kind in posemb_ablation.POSEMB_KINDS
    )
    return Experiment("posemb", "Position-embedding ablation (Table 8)", runs)


def _classifier() -> Experiment:
    runs = tuple(
        Run(
            f"ViT-B_16-{classifier}-lr{lr}",
            "configs/classifier_ablation.py",
            f"classifier={classifier},lr={lr}",
        )
        for classifier, lrs in classifier_ablation.LEARNING_RATES.items()
        for lr in lrs
    )
    return Experiment("classifier", "Class token vs. global average pooling (App. D.3)", runs)


def _masked_patch_prediction() -> Experiment:
    pre = Run("ViT-B_16-mpp-jft", "configs/mpp.py", "stage=pretrain")
    runs = (
        pre,
        Run(
            "ViT-B_16-mpp-jft-imagenet",
            "configs/mpp.py",
            f"stage=finetune,pretrained={pretrained_path('mpp', pre.name)}",
            published=(("ImageNet top-1", paper.MASKED_PATCH_PREDICTION_IMAGENET),),
        ),
    )
    return Experiment("mpp", "Self-supervised masked patch prediction (Sec. 4.6)", runs)


def experiments() -> dict[str, Experiment]:
    built = (
        _table_3(),
        _scaling(),
        _table_2(),
        _table_4_sweep(),
        _data_size(),
        _posemb(),
        _classifier(),
        _masked_patch_prediction(),
    )
    return {experiment.name: experiment for experiment in built}
