"""The paper's training recipes, proven: the trainer's own step, built from the
paper configs (configs/ → build_trainer → trainer.train_step), against a numpy
implementation written from the paper's text, for several steps.

Table 3 (pre-training): Adam with β1 0.9, β2 0.999; weight decay; a linear
warm-up, then linear decay (JFT, ImageNet-21k) or cosine (ImageNet-1k);
clipping at global norm 1 on ImageNet-1k only (the caption); sigmoid
cross-entropy summed over the classes with heads starting at bias -10 for the
multi-label sets (the official code), softmax cross-entropy on ImageNet-1k.
Table 4 (fine-tuning): SGD with momentum 0.9, batch 512 (here by gradient
accumulation over 4 micro-batches: their mean gradient), a linear warm-up then
cosine decay, clipping at global norm 1, no weight decay, a zero head; Table
2's Polyak average of the weights (decay 0.9999), debiased like Adam's moments.
Weight decay is the decoupled kind of the project (vit_jax.optim's module
text): p ← p − lr_t · (update + wd · p), on the kernels only.

Only sizes change (a 2-layer ViT of width 16 on 16x16 images, 6 steps of which
2 warm up, a batch of 32 for pre-training): every recipe value is the
config's. The reference takes its gradients from jax (jax.grad of the loss
written here, on the model's apply); the schedule, clipping, optimisers,
weight decay, accumulation and averaging are numpy in float64. Parameters
agree to 1e-5 of their update. Then each recipe element is changed in the
reference, one at a time, and the trainer must no longer agree: the test
would catch that change in the trainer.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import vit_finetune, vit_pretrain
from vit_jax import sharding
from vit_jax.step import build_trainer

NUM_CLASSES = 10
IMAGE_SHAPE = (16, 16, 3)
STEPS = 6
WARMUP_STEPS = 2
PRETRAIN_BATCH = 32
TOLERANCE = 1e-5  # Of the parameters' change over the run (see disagreement).
TINY_VIT = dict(patch_size=(4, 4), hidden_size=16, mlp_dim=32, num_heads=2, num_layers=2)

# name → the config (file, argument) whose recipe is tested.
RECIPES = {
    "pretrain_jft": (vit_pretrain, "model=ViT-B_16,dataset=jft"),
    "pretrain_imagenet21k": (vit_pretrain, "model=ViT-B_16,dataset=imagenet21k"),
    "pretrain_imagenet": (vit_pretrain, "model=ViT-B_16,dataset=imagenet2012"),
    "finetune_imagenet_polyak": (
        vit_finetune,
        "model=ViT-L_16,dataset=imagenet2012,table2=true,accum=4",
    ),
}


def paper_config(name: str):
    """The recipe's config with only the sizes made small."""
    module, arg = RECIPES[name]
    config = module.get_config(arg)
    kept = {k: config.model[k] for k in ("head_bias_init",) if k in config.model}
    if "representation_size" in config.model:  # Pre-training's pre-logits, at the tiny width.
        kept["representation_size"] = TINY_VIT["hidden_size"]
    config.model_name = "testing"
    config.model = {**TINY_VIT, **kept}
    config.image_size = IMAGE_SHAPE[0]
    config.total_steps = STEPS
    config.warmup_steps = WARMUP_STEPS
    if config.optimizer == "adam":
        config.batch_size = PRETRAIN_BATCH
    return config


# ---------------------------------------------------------------- the reference


@functools.cache
def expected_recipe(name: str) -> dict:
    """The paper's recipe for `name`, as the text states it (not read from the
    config, so a config that drifts from the paper fails too)."""
    common = dict(warmup="linear from 0", accumulation="mean", ema_debiased=True)
    if name.startswith("pretrain"):
        dataset = name.removeprefix("pretrain_")
        imagenet = dataset == "imagenet"
        return dict(
            common,
            optimizer="adam",
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            lr={"jft": 8e-4, "imagenet21k": 1e-3, "imagenet": 3e-3}[dataset],
            decay="cosine" if imagenet else "linear",
            weight_decay={"jft": 0.1, "imagenet21k": 0.03, "imagenet": 0.3}[dataset],
            decay_convention="decoupled, times the lr",
            clip=1.0 if imagenet else None,
            loss="softmax" if imagenet else "sigmoid summed over classes",
            head_bias=0.0 if imagenet else -10.0,
            accum_steps=1,
            batch=PRETRAIN_BATCH,
            ema=None,
        )
    return dict(
        common,
        optimizer="sgd",
        momentum=0.9,
        momentum_form="heavy ball",
        lr=0.03,  # The middle of Table 4's ImageNet sweep (the config's default).
        decay="cosine",
        weight_decay=0.0,
        decay_convention="decoupled, times the lr",
        clip=1.0,
        loss="softmax",
        head_bias=0.0,
        accum_steps=4,
        batch=512,
        ema=0.9999,
    )


# Each mutation changes one recipe element of the reference; the recipes it applies to.
MUTATIONS = {
    "warmup_from_first_step": (dict(warmup="linear from 1/warmup"), "all"),
    "warmup_absent": (dict(warmup="none"), "all"),
    "decay_cosine_for_linear": (dict(decay="cosine"), ("pretrain_jft", "pretrain_imagenet21k")),
    "decay_linear_for_cosine": (
        dict(decay="linear"),
        ("pretrain_imagenet", "finetune_imagenet_polyak"),
    ),
    "clipping_off": (dict(clip=None), ("pretrain_imagenet", "finetune_imagenet_polyak")),
    "clipping_added": (dict(clip=1.0), ("pretrain_jft",)),
    "momentum_off": (dict(momentum=0.0), ("finetune_imagenet_polyak",)),
    "momentum_dampened": (dict(momentum_form="dampened"), ("finetune_imagenet_polyak",)),
    "momentum_nesterov": (dict(momentum_form="nesterov"), ("finetune_imagenet_polyak",)),
    "adam_b2_0.99": (dict(b2=0.99), ("pretrain_jft",)),
    "weight_decay_coupled_l2": (
        dict(decay_convention="L2 in the gradient"),
        ("pretrain_jft", "pretrain_imagenet"),
    ),
    "weight_decay_not_times_lr": (
        dict(decay_convention="decoupled, times the schedule only"),
        ("pretrain_jft", "pretrain_imagenet"),
    ),
    "accumulation_summed": (dict(accumulation="sum"), ("finetune_imagenet_polyak",)),
    "accumulation_first_micro_batch": (
        dict(accumulation="first micro-batch"),
        ("finetune_imagenet_polyak",),
    ),
    "ema_not_debiased": (dict(ema_debiased=False), ("finetune_imagenet_polyak",)),
    "sigmoid_loss_averaged_over_classes": (
        dict(loss="sigmoid averaged over classes"),
        ("pretrain_jft",),
    ),
    "head_bias_zero": (dict(head_bias=0.0), ("pretrain_jft",)),
}


def learning_rate(recipe: dict, step: int) -> float:
    """lr before update `step` (0-based): a linear warm-up from 0 over the
    warm-up steps, then linear or cosine decay to 0 at the last step."""
    base, total = recipe["lr"], STEPS
    if step < WARMUP_STEPS and recipe["warmup"] != "none":
        offset = 1 if recipe["warmup"] == "linear from 1/warmup" else 0
        return base * (step + offset) / WARMUP_STEPS
    start = WARMUP_STEPS if recipe["warmup"] != "none" else 0
    progress = (step - start) / (total - start)
    if recipe["decay"] == "linear":
        return base * (1 - progress)
    return base * 0.5 * (1 + np.cos(np.pi * progress))


@functools.cache
def loss_gradient(name: str, loss_kind: str):
    """The gradient of the classification loss `loss_kind` (mean over the batch)
    on the model of recipe `name`, as jax computes it."""
    model = trainer_run(name)[0]

    def loss(params, images, labels):
        logits = model.apply({"params": params}, images, train=True)
        if loss_kind == "softmax":
            log_probs = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
            per_example = -jnp.sum(labels * log_probs, axis=-1)
        else:  # −[y log σ(z) + (1 − y) log σ(−z)] per class.
            per_class = -(labels * jax.nn.log_sigmoid(logits))
            per_class -= (1 - labels) * jax.nn.log_sigmoid(-logits)
            reduce = jnp.sum if loss_kind == "sigmoid summed over classes" else jnp.mean
            per_example = reduce(per_class, axis=-1)
        return jnp.mean(per_example)

    return jax.jit(jax.grad(loss))


def flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): np.asarray(v, np.float64) for p, v in leaves}


def unflat(flat_params: dict, like):
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    leaves = [
        jnp.asarray(flat_params[jax.tree_util.keystr(p)], jnp.float32) for p, _ in paths_and_leaves
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def as_stored(values: np.ndarray) -> np.ndarray:
    """The parameters are float32 (the models' dtype): each step's result is
    rounded to it, as the trainer's are, so that the two runs do not drift apart
    by float32's resolution (1e-6 at the head's bias of -10) but agree to the
    precision of the update."""
    return values.astype(np.float32).astype(np.float64)


def is_kernel(name: str) -> bool:
    """Weight decay acts on the weight matrices (and filters) only."""
    return name.endswith("['kernel']")


def reference_run(name: str, init_params, batches, recipe: dict):
    """(params, Polyak average or None) after the batches, by the recipe."""
    grad = loss_gradient(name, recipe["loss"])
    params = flat(init_params)
    head = [k for k in params if k.startswith("['head']")]
    for name in head:  # The recipe's head: zero weights, a constant bias.
        params[name] = np.full_like(params[name], recipe["head_bias"] if "bias" in name else 0.0)
    first = {k: np.zeros_like(v) for k, v in params.items()}  # Adam's m, or momentum.
    second = {k: np.zeros_like(v) for k, v in params.items()}  # Adam's v.
    ema = None
    for step, batch in enumerate(batches):
        t = step + 1
        lr = learning_rate(recipe, step)
        schedule_only = lr / recipe["lr"]
        micro = np.split(np.arange(len(batch["image"])), recipe["accum_steps"])
        grads = []
        for rows in micro:
            g = grad(unflat(params, init_params), batch["image"][rows], batch["labels"][rows])
            grads.append(flat(g))
        if recipe["accumulation"] == "first micro-batch":
            grads = grads[:1]
        combine = np.sum if recipe["accumulation"] == "sum" else np.mean
        g = {k: combine([gr[k] for gr in grads], axis=0) for k in params}
        if recipe["clip"]:
            norm = np.sqrt(sum(np.sum(v**2) for v in g.values()))
            g = {k: v * min(1.0, recipe["clip"] / norm) for k, v in g.items()}
        wd = recipe["weight_decay"]
        for k in params:
            decay = wd * params[k] if wd and is_kernel(k) else 0.0
            gk = g[k] + (decay if recipe["decay_convention"] == "L2 in the gradient" else 0.0)
            if recipe["optimizer"] == "adam":
                # β as float32 holds them (0.999 is 0.99900001 there; its 1 − β2
                # is 1.3e-5 off, which moves the update by as much as is tested).
                b1, b2 = (float(np.float32(recipe[b])) for b in ("b1", "b2"))
                first[k] = b1 * first[k] + (1 - b1) * gk
                second[k] = b2 * second[k] + (1 - b2) * gk**2
                m_hat, v_hat = first[k] / (1 - b1**t), second[k] / (1 - b2**t)
                update = m_hat / (np.sqrt(v_hat) + recipe["eps"])
            else:
                mu = recipe["momentum"]
                scale = (1 - mu) if recipe["momentum_form"] == "dampened" else 1.0
                first[k] = mu * first[k] + scale * gk
                update = first[k]
                if recipe["momentum_form"] == "nesterov":
                    update = gk + mu * first[k]
            if recipe["decay_convention"] == "decoupled, times the lr":
                new = params[k] - lr * (update + decay)
            elif recipe["decay_convention"] == "decoupled, times the schedule only":
                new = params[k] - lr * update - schedule_only * decay
            else:
                new = params[k] - lr * update
            params[k] = as_stored(new)
        if recipe["ema"]:
            d = recipe["ema"]
            if recipe["ema_debiased"]:  # Weight (1 − d) d^(t−i) / (1 − d^t) on p_i.
                rate = (1 - d) / (1 - d**t)
                ema = {k: v.copy() for k, v in params.items()} if t == 1 else ema
            else:  # The plain recursion, started at the initial parameters.
                rate = 1 - d
                ema = ema if ema is not None else flat(init_params)
            ema = {k: as_stored(ema[k] + rate * (params[k] - ema[k])) for k in params}
    return params, ema


# ---------------------------------------------------------------- the trainer


def make_batches(recipe: dict, seed: int = 0) -> list[dict]:
    """Random images; every other batch is of one class, so that its gradient
    adds up over the examples and exceeds the clipping norm, while the mixed
    batches' gradients average out below it."""
    rng = np.random.default_rng(seed)
    batches = []
    for step in range(STEPS):
        images = rng.uniform(-1, 1, (recipe["batch"], *IMAGE_SHAPE)).astype(np.float32)
        classes = rng.integers(0, NUM_CLASSES, recipe["batch"])
        if step % 2 == 0 or recipe["optimizer"] == "adam":
            classes[:] = classes[0]
        labels = np.eye(NUM_CLASSES, dtype=np.float32)[classes]
        if recipe["loss"].startswith("sigmoid"):  # Multi-label: a second class sometimes.
            extra = rng.integers(0, NUM_CLASSES, recipe["batch"])
            labels[np.arange(recipe["batch"]), extra] = rng.random(recipe["batch"]) < 0.5
        batches.append({"image": images, "labels": labels})
    return batches


@functools.cache
def trainer_run(name: str):
    """The trainer's own step on the recipe's config: (model, initial params,
    batches, final params, Polyak average or None, gradient norms)."""
    config = paper_config(name)
    recipe = expected_recipe(name)
    mesh = sharding.make_mesh(config.mesh)
    trainer = build_trainer(config, NUM_CLASSES, IMAGE_SHAPE, mesh)
    state = trainer.init_state(config.seed)
    init_params = jax.device_get(state.params)
    batches = make_batches(recipe)
    grad_norms = []
    for batch in batches:
        state, metrics = trainer.train_step(state, batch)
        grad_norms.append(float(metrics["train/grad_norm"]))
    ema = None if state.ema_params is None else flat(jax.device_get(state.ema_params))
    return trainer.model, init_params, batches, flat(jax.device_get(state.params)), ema, grad_norms


def has_zero_gradient(name: str) -> bool:
    """The attention's key bias adds the same amount to every score of a query,
    which the softmax removes: its gradient is exactly 0, computed as rounding
    noise, which Adam normalises to steps of ±lr either way."""
    return name.endswith("['key']['bias']")


def disagreement(trained: dict, reference: dict, start: dict) -> float:
    """|trained − reference| in units of what may differ (Euclidean norms over
    all parameters): 1e-5 of the parameters' change over the run, plus one
    float32 spacing of each parameter. The trainer stores float32 parameters,
    and with the pre-training rates (8e-4 for 6 steps) that spacing is up to
    4e-5 of the change; Adam turns a rounding of the gradient into a full
    step of its sign where the gradient is near zero, so no float32 trainer
    agrees more closely. At most 1: the trainer follows the reference."""
    names = [k for k in reference if not has_zero_gradient(k)]

    def norm(arrays):
        return np.sqrt(sum(np.sum(np.square(a)) for a in arrays))

    diff = norm(trained[k] - reference[k] for k in names)
    change = norm(reference[k] - start[k] for k in names)
    spacing = norm(np.spacing(reference[k].astype(np.float32)) for k in names)
    return diff / (TOLERANCE * change + spacing)


def errors(name: str, recipe: dict) -> tuple[float, float | None]:
    """(params error, Polyak average error or None) of the trainer against `recipe`."""
    _, init_params, batches, params, ema, _ = trainer_run(name)
    ref_params, ref_ema = reference_run(name, init_params, batches, recipe)
    start = flat(init_params)
    ema_error = None if ema is None else disagreement(ema, ref_ema, start)
    return disagreement(params, ref_params, start), ema_error


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", RECIPES)
def test_the_config_is_the_papers_recipe(name):
    config, recipe = paper_config(name), expected_recipe(name)
    assert config.optimizer == recipe["optimizer"]
    assert config.lr == pytest.approx(recipe["lr"])
    assert config.lr_decay == recipe["decay"]
    assert config.grad_clip_norm == (recipe["clip"] or 0.0)
    assert config.weight_decay == pytest.approx(recipe["weight_decay"])
    assert config.accum_steps == recipe["accum_steps"]
    assert config.batch_size == recipe["batch"]
    assert config.ema_decay == (recipe["ema"] or 0.0)
    assert config.model.get("head_bias_init", 0.0) == recipe["head_bias"]
    if recipe["optimizer"] == "adam":
        assert (config.b1, config.b2, config.adam_eps) == (recipe["b1"], recipe["b2"], 1e-8)
        assert config.loss == ("softmax_xent" if recipe["loss"] == "softmax" else "sigmoid_xent")
    else:
        assert config.momentum == recipe["momentum"]


@pytest.mark.parametrize("name", RECIPES)
def test_the_trainer_follows_the_recipe(name):
    params_error, ema_error = errors(name, expected_recipe(name))
    assert params_error <= 1.0
    if expected_recipe(name)["ema"]:
        assert ema_error <= 1.0


def test_the_recipes_exercise_what_they_test():
    # Clipping changes something only where the gradient norm exceeds 1, and the
    # summed accumulation only where the mean gradient is not clipped anyway.
    for name in ("pretrain_imagenet", "finetune_imagenet_polyak"):
        norms = trainer_run(name)[-1]
        assert max(norms) > 1.0, (name, norms)
    assert min(trainer_run("finetune_imagenet_polyak")[-1]) < 1.0 / 4


MUTATED = [
    (name, mutation)
    for mutation, (_, applies_to) in MUTATIONS.items()
    for name in (RECIPES if applies_to == "all" else applies_to)
]


@pytest.mark.parametrize("name,mutation", MUTATED, ids=[f"{n}-{m}" for n, m in MUTATED])
def test_a_changed_recipe_element_no_longer_matches(name, mutation):
    recipe = {**expected_recipe(name), **MUTATIONS[mutation][0]}
    params_error, ema_error = errors(name, recipe)
    worst = max(params_error, ema_error or 0.0)
    assert worst > 10.0, (name, mutation, params_error, ema_error)
