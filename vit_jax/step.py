"""The training step, the state it updates and the `Trainer` that holds both.

    trainer = build_trainer(config, num_classes, image_shape, mesh, total_steps=steps)
    state = trainer.init_state(config.seed)
    state, metrics = trainer.train_step(state, batch)

One jitted step on the global batch: the state is donated and laid out on the
mesh by the config's sharding rules, the batch is split over the data axes,
and the loss is the objective's (vit_jax.objectives). The parameters are
first built abstractly (jax.eval_shape) and then created by a jitted init
with out_shardings, so a model larger than one device never materialises on
one device. The training loop (vit_jax.train), the ahead-of-time compiler
(vit_jax.compile), the benchmark and the GPU checks all build their step
here, so what they measure is the step that trains; nothing here imports
TensorFlow.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from absl import logging
from jax.experimental import multihost_utils

from vit_jax import aot, optim, sharding
from vit_jax.errors import UserError
from vit_jax.kernels.backends import choose_attention
from vit_jax.models import model_options
from vit_jax.objectives import OBJECTIVES
from vit_jax.train_state import TrainState

# The step's metric that says whether its loss and gradient norm are finite;
# the loop collects it instead of writing it (vit_jax.train.FinitenessWatch).
FINITE_KEY = "train/finite"


def make_model(config, num_classes: int, attention_fn=None, constrain_batch=None):
    """The model `config` trains (its objective's: the classifier, or its
    masked-patch variant). `attention_fn` (vit_jax.kernels.backends) replaces
    the default XLA one; `constrain_batch` lays out the head's input for the
    step's mesh (vit_jax.sharding.batch_constraint)."""
    options = dict(config.model)
    settable = model_options(config.model_name)
    if attention_fn is not None and "attention_fn" in settable:
        options["attention_fn"] = attention_fn
    if constrain_batch is not None and "constrain_batch" in settable:
        options["constrain_batch"] = constrain_batch
    return OBJECTIVES[config.objective].build_model(config.model_name, num_classes, options)


def resolve_attention(config, mesh):
    """config.attention for the mesh's devices: (attention_fn, the line that
    says which back-end and why), logged once."""
    fn, why = choose_attention(config.attention, mesh, config.model.get("dtype", jnp.float32))
    logging.info("Attention: %s.", why)
    return fn, why


# ---------------------------------------------------------------- state


def init_params(model, rng, image_shape):
    """The model's freshly initialised parameters for images of `image_shape`."""
    dummy = jnp.zeros((1, *image_shape), jnp.float32)
    return model.init({"params": rng, "mpp": rng}, dummy, train=False)["params"]


def make_state_factory(model, tx, config, image_shape):
    """rng → a fresh TrainState (pure, so it can be eval_shape'd and jitted)."""

    def create(rng):
        init_rng, root_rng = jax.random.split(rng)
        params = init_params(model, init_rng, image_shape)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            ema_params=params if config.ema_decay else None,
            rng=root_rng,
        )

    return create


def global_to_host(tree):
    """Numpy copies of (possibly multi-host sharded) arrays, on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


# ---------------------------------------------------------------- the step


def make_train_step(model, tx, schedule, config, mesh):
    """state, batch → state, metrics. One optimizer update on the global batch,
    averaged over `config.accum_steps` micro-batches."""
    micro_batch_sharding = sharding.batch_sharding(mesh)
    loss_and_accuracy = OBJECTIVES[config.objective].loss_and_accuracy

    def loss_and_grad(params, batch, rng):
        dropout_rng, mpp_rng = jax.random.split(rng)
        rngs = {"dropout": dropout_rng, "mpp": mpp_rng}

        def loss_fn(params):
            return loss_and_accuracy(model, params, batch, config, rngs, True)

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    def train_step(state: TrainState, batch):
        step_rng = jax.random.fold_in(state.rng, state.step)  # Exact on resume.
        (loss, accuracy), grads = optim.accumulate_gradients(
            lambda p, b, i: loss_and_grad(p, b, jax.random.fold_in(step_rng, i)),
            state.params,
            batch,
            config.accum_steps,
            constrain=lambda b: jax.lax.with_sharding_constraint(b, micro_batch_sharding),
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = state.ema_params
        if ema_params is not None:
            # Debiased by the update count: the average never keeps the initial params.
            ema_params = optim.ema_update(ema_params, params, config.ema_decay, state.step + 1)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if config.skip_nonfinite:  # The step (and so the data position) moves on regardless.
            params, opt_state, ema_params = jax.tree.map(
                lambda new, old: jnp.where(finite, new, old),
                (params, opt_state, ema_params),
                (state.params, state.opt_state, state.ema_params),
            )
        metrics = {
            "train/loss": loss,
            "train/accuracy": accuracy,
            "train/grad_norm": grad_norm,
            "train/lr": schedule(state.step),
            FINITE_KEY: finite,
        }
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params
        )
        return new_state, metrics

    return train_step


def jit_train_step(model, tx, schedule, config, mesh, state_shardings):
    """The trainer's compiled step: the state is donated and laid out by the
    sharding rules (the benchmark times exactly this)."""
    return jax.jit(
        make_train_step(model, tx, schedule, config, mesh),
        in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )


def make_eval_step(model, config):
    """params, batch → (correct, count, loss sum) over the unpadded examples
    (batch["mask"]), as the objective counts them."""
    eval_counts = OBJECTIVES[config.objective].eval_counts

    def eval_step(params, batch):
        batch = {**batch, "mask": batch["mask"].astype(jnp.float32)}
        return eval_counts(model, params, batch, config)

    return eval_step


# ---------------------------------------------------------------- the trainer


@dataclasses.dataclass(frozen=True)
class Trainer:
    """A model and a config turned into what the loop runs: the state
    factory, the state's abstract shapes and shardings, the jitted step.
    The training loop, the compiler, the benchmark and the GPU checks all
    build it here, so the benchmark times exactly the step that trains."""

    model: Any
    abstract_params: Any
    abstract_state: TrainState
    state_shardings: Any
    create_state: Callable  # rng → TrainState; pure, for eval_shape and jit.
    train_step: Callable  # (state, batch) → (state, metrics); the state is donated.
    attention: str  # Which attention back-end the step uses, and why.

    def init_state(self, seed: int) -> TrainState:
        """A fresh state, each array created where its sharding puts it."""
        init = jax.jit(self.create_state, out_shardings=self.state_shardings)
        return init(jax.random.PRNGKey(seed))

    def abstract_sharded_state(self) -> TrainState:
        """The state's shapes with their shardings: what a checkpoint restores
        into and what a step is lowered on without data."""
        return aot.abstract_arrays(self.abstract_state, self.state_shardings)


def build_trainer(
    config, num_classes: int, image_shape, mesh, model=None, *, total_steps: int | None = None
) -> Trainer:
    """The Trainer for `config` on images of `image_shape` (H, W, C).

    `model` replaces config's (the benchmark's official-formulation baseline).
    `total_steps` is the step the learning rate decays to; None takes
    config.total_steps, which must then be set (a run given in epochs passes
    vit_jax.config.resolve_total_steps's count).
    """
    if total_steps is None:
        if config.total_steps <= 0:
            raise UserError(
                "config.total_steps is 0 (the run's length is in epochs): pass build_trainer "
                "total_steps=vit_jax.config.resolve_total_steps(config, num_train_examples)."
            )
        total_steps = int(config.total_steps)
    if model is None:
        attention_fn, attention_why = resolve_attention(config, mesh)
        # FSDP: the head's input stays split by batch (see batch_constraint).
        model = make_model(config, num_classes, attention_fn, sharding.batch_constraint(mesh))
    else:
        attention_why = f"set by the given {type(model).__name__}"
    # Abstract init: shapes only, so nothing big materialises on one device.
    abstract_params = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0), image_shape))
    tx, schedule = optim.make_optimizer(config, abstract_params, total_steps)
    create_state = make_state_factory(model, tx, config, image_shape)
    abstract_state = jax.eval_shape(create_state, jax.random.PRNGKey(config.seed))
    state_shardings = sharding.tree_shardings(abstract_state, mesh, config.sharding_rules)
    return Trainer(
        model=model,
        abstract_params=abstract_params,
        abstract_state=abstract_state,
        state_shardings=state_shardings,
        create_state=create_state,
        train_step=jit_train_step(model, tx, schedule, config, mesh, state_shardings),
        attention=attention_why,
    )
