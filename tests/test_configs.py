"""The paper configs: hyper-parameters against Tables 3 and 4 (transcribed here
from the paper, independently of the config files), every fine-tuning variant's
optimiser built and every config's model built abstractly at full size.
tests/test_paper_matrix.py builds the optimiser of every run of the experiment
matrix and trains it 2 steps, shrunk."""

import importlib
import pathlib

import jax
import jax.numpy as jnp
import pytest

from configs import common
from vit_jax import data, optim
from vit_jax.config import default_config, resolve_total_steps
from vit_jax.models import costs, get_masked_patch_model, get_model, model_kwargs

REPO = pathlib.Path(__file__).resolve().parents[1]

# Table 3, one line per (model, dataset, epochs): base LR, LR decay, weight decay, dropout.
TABLE_3 = [
    ("ViT-B_16", "jft", 7, 8e-4, "linear", 0.1, 0.0),
    ("ViT-B_32", "jft", 7, 8e-4, "linear", 0.1, 0.0),
    ("ViT-L_32", "jft", 7, 6e-4, "linear", 0.1, 0.0),
    ("ViT-L_16", "jft", 7, 4e-4, "linear", 0.1, 0.0),
    ("ViT-L_16", "jft", 14, 4e-4, "linear", 0.1, 0.0),
    ("ViT-H_14", "jft", 14, 3e-4, "linear", 0.1, 0.0),
    ("BiT-R50x1", "jft", 7, 1e-3, "linear", 0.1, 0.0),
    ("BiT-R50x2", "jft", 7, 1e-3, "linear", 0.1, 0.0),
    ("BiT-R101x1", "jft", 7, 8e-4, "linear", 0.1, 0.0),
    ("BiT-R152x1", "jft", 7, 6e-4, "linear", 0.1, 0.0),
    ("BiT-R152x2", "jft", 7, 6e-4, "linear", 0.1, 0.0),
    ("R50+ViT-B_16", "jft", 7, 8e-4, "linear", 0.1, 0.0),
    ("R50+ViT-B_32", "jft", 7, 8e-4, "linear", 0.1, 0.0),
    ("R50+ViT-L_32", "jft", 7, 2e-4, "linear", 0.1, 0.0),
    ("R50+ViT-L_16", "jft", 7, 4e-4, "linear", 0.1, 0.0),
    ("R50+ViT-L_16", "jft", 14, 4e-4, "linear", 0.1, 0.0),
    ("ViT-B_16", "imagenet21k", 90, 1e-3, "linear", 0.03, 0.1),
    ("ViT-B_32", "imagenet21k", 90, 1e-3, "linear", 0.03, 0.1),
    ("ViT-L_16", "imagenet21k", 30, 1e-3, "linear", 0.03, 0.1),
    ("ViT-L_16", "imagenet21k", 90, 1e-3, "linear", 0.03, 0.1),
    ("ViT-L_32", "imagenet21k", 30, 1e-3, "linear", 0.03, 0.1),
    ("ViT-L_32", "imagenet21k", 90, 1e-3, "linear", 0.03, 0.1),
] + [(m, "imagenet2012", 300, 3e-3, "cosine", 0.3, 0.1) for m in ("ViT-B_16", "ViT-L_16")]

# Table 4: dataset, steps, LR sweep.
TABLE_4 = [
    ("imagenet2012", 20_000, (0.003, 0.01, 0.03, 0.06)),
    ("cifar100", 10_000, (0.001, 0.003, 0.01, 0.03)),
    ("cifar10", 10_000, (0.001, 0.003, 0.01, 0.03)),
    ("oxford_iiit_pet", 500, (0.001, 0.003, 0.01, 0.03)),
    ("oxford_flowers102", 500, (0.001, 0.003, 0.01, 0.03)),
]

ALL_CONFIGS = sorted(
    p.stem for p in (REPO / "configs").glob("*.py") if p.stem not in ("__init__", "common")
)


def load(name, arg=None):
    return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.mark.parametrize("model,dataset,epochs,lr,decay,wd,dropout", TABLE_3)
def test_pretraining_matches_table_3(model, dataset, epochs, lr, decay, wd, dropout):
    config = load("vit_pretrain", f"model={model},dataset={dataset},epochs={epochs}")
    assert (config.model_name, config.dataset) == (model, dataset)
    assert config.optimizer == "adam" and (config.b1, config.b2) == (0.9, 0.999)
    assert config.lr == lr and config.lr_decay == decay and config.weight_decay == wd
    assert config.model.get("dropout_rate", 0.0) == dropout
    assert config.batch_size == 4096 and config.warmup_steps == 10_000
    assert config.total_epochs == epochs and config.total_steps == 0
    assert config.image_size == 224
    # Table 3's caption: "For ImageNet we found it beneficial to additionally
    # apply gradient clipping at global norm 1" (ImageNet-1k only).
    assert config.grad_clip_norm == (1.0 if dataset == "imagenet2012" else 0.0)
    assert config.loss == ("softmax_xent" if dataset == "imagenet2012" else "sigmoid_xent")
    if not model.startswith("BiT"):  # The pre-training head keeps pre-logits.
        assert config.model.representation_size > 0


@pytest.mark.parametrize("dataset,steps,sweep", TABLE_4)
def test_finetuning_matches_table_4(dataset, steps, sweep):
    for lr in sweep:
        config = load("vit_finetune", f"dataset={dataset},lr={lr},pretrained=p.npz")
        assert config.optimizer == "sgd" and config.momentum == 0.9 and config.lr == lr
        assert config.batch_size == 512 and config.total_steps == steps
        assert config.lr_decay == "cosine"
        # The official code's 500 warm-up steps; big_vision's 100 where the run is 500.
        assert config.warmup_steps == (100 if steps == 500 else 500)
        assert config.weight_decay == 0.0 and config.grad_clip_norm == 1.0
        assert config.image_size == 384 and config.pretrained == "p.npz"
        assert "representation_size" not in config.model  # Pre-logits dropped.
    with pytest.raises(ValueError, match="not one of the paper's"):
        load("vit_finetune", f"dataset={dataset},lr=0.5")


def test_finetuning_holdout_and_accumulation():
    config = load("vit_finetune", "dataset=cifar100,holdout=true,accum=8")
    assert (config.train_split, config.test_split) == ("minitrain", "minival")
    assert config.accum_steps == 8 and config.batch_size == 512
    assert data.num_examples("cifar100", "minival") == 1000  # 2% of CIFAR's 50k.


FINETUNE_VARIANTS = [
    f"model={model},dataset={dataset},lr={lr},holdout={holdout}{setting}"
    for dataset, _, sweep in TABLE_4
    for lr in sweep
    for holdout in (False, True)
    for model, setting in [("ViT-B_16", "")]
    + (
        [("ViT-L_16", ",table2=true"), ("ViT-H_14", ",table2=true")]
        if dataset == "imagenet2012"
        else []
    )
]


def test_every_finetuning_variant_builds_its_optimiser():
    # Pets and Flowers once had as many warm-up steps as steps: the schedule
    # rejected them, and only building the optimiser shows it.
    params = {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
    for arg in FINETUNE_VARIANTS:
        config = load("vit_finetune", arg)
        tx, schedule = optim.make_optimizer(config, params, config.total_steps)
        tx.init(params)
        assert 0 < config.warmup_steps < config.total_steps, arg
        assert float(schedule(config.warmup_steps)) == pytest.approx(config.lr), arg
        assert float(schedule(config.total_steps)) == pytest.approx(0.0, abs=1e-9), arg
    for dataset in ("oxford_iiit_pet", "oxford_flowers102"):
        assert load("vit_finetune", f"dataset={dataset}").warmup_steps == 100


@pytest.mark.parametrize("model,resolution", [("ViT-L_16", 512), ("ViT-H_14", 518)])
def test_table_2_setting(model, resolution):
    config = load("vit_finetune", f"model={model},dataset=imagenet2012,table2=true")
    assert config.image_size == resolution and config.ema_decay == 0.9999
    assert f"inception_crop({resolution})" in config.pp_train
    # "For ImageNet results in Table 2": the other columns are at 384 px, not averaged.
    with pytest.raises(ValueError, match="imagenet2012"):
        load("vit_finetune", f"model={model},dataset=cifar10,table2=true")
    plain = load("vit_finetune", f"model={model},dataset=cifar10")
    assert plain.ema_decay == 0.0 and plain.image_size in (384, 378)


def test_vtab_1k_recipe():
    from configs import vit_vtab

    assert len(vit_vtab.TASKS) == 19
    for task in vit_vtab.TASKS:
        config = load("vit_vtab", f"task={task}")
        assert config.dataset == f"vtab/{task}" and config.train_split == "train800val200"
        assert config.total_steps == 2_500 and config.lr == 0.01 and config.batch_size == 512
        assert data.num_examples(config.dataset, config.train_split) == 1000
    # VTAB's protocol: no crop or flip where it would change the label
    # (tests/test_data_preprocess.py runs these strings on an image).
    assert "inception_crop" in load("vit_vtab", "task=dtd").pp_train
    assert "flip_lr" in load("vit_vtab", "task=dtd").pp_train
    for task in ("clevr_count", "clevr_distance", "kitti_distance", "smallnorb_elevation"):
        pp_train = load("vit_vtab", f"task={task}").pp_train
        assert "crop" not in pp_train and "flip_lr" in pp_train, task
    for task in ("dsprites_location", "dsprites_orientation", "smallnorb_azimuth"):
        pp_train = load("vit_vtab", f"task={task}").pp_train
        assert "crop" not in pp_train and "flip" not in pp_train, task
    assert load("vit_vtab", "task=svhn").pp_train == "decode|inception_crop(384)|value_range(-1, 1)"


def _uses_default_config(name):
    return "default_config()" in (REPO / "configs" / f"{name}.py").read_text()


def test_masked_patch_prediction_recipe():
    config = load("mpp")
    assert config.objective == "masked_patch_prediction" and config.model_name == "ViT-B_16"
    assert config.total_steps == 1_000_000 and config.batch_size == 4096
    assert config.optimizer == "adam" and config.lr == 2e-4
    assert config.warmup_steps == 10_000 and config.lr_decay == "cosine"
    finetune = load("mpp", "stage=finetune,pretrained=mpp.npz,lr=0.03")
    assert finetune.dataset == "imagenet2012" and finetune.pretrained == "mpp.npz"
    assert finetune.total_steps == 20_000 and finetune.lr == 0.03


def test_ablation_and_data_size_variants():
    assert load("posemb_ablation", "posemb=relative").model.posemb == "relative"
    gap = load("classifier_ablation", "classifier=gap")
    assert gap.model.classifier == "gap" and gap.lr == 3e-4
    # App. D.3: GAP "followed by a linear classifier": no pre-logits layer.
    assert gap.model.representation_size is None
    model = get_model(gap.model_name, 1000, **gap.model)
    assert set(costs.abstract_params(model, 224)) == {
        "embedding",
        "Transformer",
        "head",
    }
    token = load("classifier_ablation", "classifier=token")
    assert "pre_logits" in costs.abstract_params(
        get_model(token.model_name, 1000, **token.model), 224
    )


# Fig. 4 (Sec. 4.3): "random subsets of 9M, 30M, and 90M as well as the full
# JFT300M dataset", Fig. 4's models, ViT-b/32 = ViT-B/32 "with all hidden
# dimensions halved" (the caption).
FIG_4_SUBSETS = {"jft_9m": 9_000_000, "jft_30m": 30_000_000, "jft_90m": 90_000_000}
FIG_4_MODELS = ("ViT-L_16", "ViT-L_32", "ViT-B_32", "ViT-b_32", "BiT-R50x1", "BiT-R152x2")


@pytest.mark.parametrize("model", FIG_4_MODELS)
def test_fig_4_subsets_share_every_hyper_parameter(model):
    # "We do not perform additional regularization on the smaller subsets and use
    # the same hyper-parameters for all settings."
    full = load("data_size_study", f"model={model},data=jft_303m")
    assert full.train_split == "train[50000:]" and full.dataset == "jft"
    # The 303M point is the model's Table 3 JFT run (ViT-b/32: ViT-B/32's row).
    row = load("vit_pretrain", f"model={model.replace('ViT-b', 'ViT-B')},dataset=jft")
    assert full.total_steps == resolve_total_steps(row, data.num_examples("jft", row.train_split))
    for field in ("lr", "lr_decay", "weight_decay", "warmup_steps", "batch_size", "loss"):
        assert full[field] == row[field], field
    assert full.label_smoothing == 0.0 and full.model.get("dropout_rate", 0.0) == 0.0
    reference = {k: v for k, v in full.to_dict().items() if k != "train_split"}
    for subset, size in FIG_4_SUBSETS.items():
        config = load("data_size_study", f"model={model},data={subset}")
        assert data.num_examples("jft", config.train_split) == size
        assert {k: v for k, v in config.to_dict().items() if k != "train_split"} == reference
        # The subsets leave out the held-out images the evaluation reads.
        assert config.train_split.startswith("train[50000:")


@pytest.mark.parametrize("model", FIG_4_MODELS)
def test_fig_4_probes_5_shot_imagenet_during_training(model):
    # "use early-stopping, and report the best validation accuracy achieved during
    # training ... few-shot linear accuracy instead of full finetuning accuracy".
    from configs import data_size_study

    for subset in (*FIG_4_SUBSETS, "jft_303m"):
        config = load("data_size_study", f"model={model},data={subset}")
        assert [name for name, *_ in config.fewshot_datasets] == ["imagenet2012"]
        assert 5 in config.fewshot_shots
        assert 0 < config.fewshot_every < config.total_steps
        assert config.total_steps // config.fewshot_every >= 20  # A curve, not a point.
        _, shots_split, test_split = config.fewshot_datasets[0]
        assert data.num_examples("imagenet2012", shots_split) >= 25 * 1000
        assert test_split == "validation"
    assert data_size_study.FIG_4_METRIC == "fewshot/imagenet2012/5shot"
    for key in ("weight_decay=0.3", "dropout=0.1", "label_smoothing=0.1"):
        with pytest.raises(ValueError, match="same hyper-parameters"):
            load("data_size_study", f"model={model},data=jft_9m,{key}")


def test_fig_4_vit_b_32_is_vit_b_32_halved():
    config = load("data_size_study", "model=ViT-b_32,data=jft_9m")
    assert config.model_name == "ViT-b_32" and config.model.representation_size == 384
    small, base = model_kwargs("ViT-b_32"), model_kwargs("ViT-B_32")
    for field in ("hidden_size", "mlp_dim"):
        assert 2 * small[field] == base[field], field
    assert small["num_layers"] == base["num_layers"] and small["patch_size"] == (32, 32)
    assert small["hidden_size"] // small["num_heads"] == 64  # ViT-B's head width.
    with pytest.raises(ValueError, match="Fig. 4 model"):
        load("data_size_study", "model=ViT-b_32,data=jft")


# Fig. 3 / Table 5: (model, pre-training dataset, epochs); Table 5's JFT ViT-L/16
# is Table 6's 14-epoch cell (87.12), its ViT-H/14 the 14-epoch one.
FIG_3 = [(m, "imagenet2012", 300) for m in ("ViT-B_16", "ViT-B_32", "ViT-L_16", "ViT-L_32")] + [
    ("ViT-B_16", "imagenet21k", 90),
    ("ViT-B_32", "imagenet21k", 90),
    ("ViT-L_16", "imagenet21k", 90),
    ("ViT-L_32", "imagenet21k", 90),
    ("ViT-B_16", "jft", 7),
    ("ViT-B_32", "jft", 7),
    ("ViT-L_16", "jft", 14),
    ("ViT-L_32", "jft", 7),
    ("ViT-H_14", "jft", 14),
]


@pytest.mark.parametrize("model,dataset,epochs", FIG_3)
def test_fig_3_carries_the_regularisation_sweep(model, dataset, epochs):
    # "To boost the performance on the smaller datasets, we optimize three basic
    # regularization parameters - weight decay, dropout, and label smoothing."
    from configs import data_size_study

    base = load("data_size_study", f"model={model},data={dataset}")
    row = load("vit_pretrain", f"model={model},dataset={dataset},epochs={epochs}")
    assert base.to_dict() == row.to_dict()  # Without arguments: the Table 3 row.
    assert not base.fewshot_datasets
    sweep = data_size_study.REGULARISATION_SWEEP
    assert set(sweep) == {"weight_decay", "dropout", "label_smoothing"}
    assert all(len(values) >= 2 for values in sweep.values())
    # The grid holds the settings Table 3 reports for ImageNet and ImageNet-21k.
    assert {0.3, 0.03} <= set(sweep["weight_decay"]) and 0.1 in sweep["dropout"]
    point = f"weight_decay={sweep['weight_decay'][0]},dropout={sweep['dropout'][-1]}"
    point += f",label_smoothing={sweep['label_smoothing'][-1]}"
    config = load("data_size_study", f"model={model},data={dataset},{point}")
    assert config.weight_decay == sweep["weight_decay"][0]
    assert config.model.dropout_rate == sweep["dropout"][-1]
    assert config.label_smoothing == sweep["label_smoothing"][-1]
    changed = {k for k, v in config.to_dict().items() if v != row.to_dict()[k]}
    assert changed <= {"weight_decay", "label_smoothing", "model"}


def test_worked_example_is_the_table_3_row():
    example = load("vit_b16_imagenet21k").to_dict()
    assert example == load("vit_pretrain", "model=ViT-B_16,dataset=imagenet21k").to_dict()


@pytest.mark.parametrize("name", [n for n in ALL_CONFIGS if _uses_default_config(n)])
def test_configs_set_only_what_differs_from_the_defaults(name):
    # default_config() is the schema; a config restating a default would hide
    # which of its values are choices.
    source = (REPO / "configs" / f"{name}.py").read_text()
    defaults = default_config()
    for field, value in defaults.items():
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            assert f"config.{field} = {value!r}\n" not in source, (name, field)


def test_variant_errors_name_the_fix():
    with pytest.raises(ValueError, match="Did you mean 'dataset'"):
        load("vit_pretrain", "datset=jft")
    with pytest.raises(ValueError, match="no row for model=ViT-S_16.*ViT-B_16"):
        load("vit_pretrain", "model=ViT-S_16,dataset=jft")
    with pytest.raises(ValueError, match="for 7, 14 epochs, not 9"):
        load("vit_pretrain", "model=ViT-L_16,epochs=9")
    with pytest.raises(ValueError, match="must be a int"):
        load("vit_finetune", "accum=two")
    with pytest.raises(ValueError, match="task"):
        load("vit_vtab", "task=mnist")


def test_preprocessing_follows_image_size_overrides():
    config = load("vit_pretrain")
    config.image_size = 64
    assert "inception_crop(64)" in config.pp_train
    assert "resize_small(73)|central_crop(64)" in config.pp_eval  # round(64·256/224) = 73
    assert common.parse_arg("x=1,y=true", x=0, y=False).to_dict() == {"x": 1, "y": True}


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_config_builds_its_model_abstractly(name):
    config = load(name)
    if config.get("objective", "classification") == "masked_patch_prediction":
        model = get_masked_patch_model(config.model_name, **config.model)
    else:
        info = data.get_dataset_info(config.dataset, config.data_dir)
        model = get_model(config.model_name, info.num_classes, **config.model)
    channels = 1 if config.dataset == "digits" else 3
    params = costs.abstract_params(model, config.image_size, channels)
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(params))
    assert costs.count_params(params) > 0


def test_worked_example_without_imagenet21k_says_how_to_prepare_it(tmp_path):
    from vit_jax import train

    with pytest.raises(data.DatasetNotPreparedError, match="ImageNet-21k is not in TFDS"):
        train.train_and_evaluate(load("vit_b16_imagenet21k"), str(tmp_path))
    assert not any(tmp_path.iterdir())  # Stopped before writing anything.
