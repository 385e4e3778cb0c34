"""Optimisers, learning-rate schedules, EMA and gradient accumulation (optax throughout).

The paper (Sec. 4.1, App. B.1) pre-trains with Adam (β1=0.9, β2=0.999) and
weight decay, fine-tunes with SGD + momentum 0.9 and no weight decay; both use
a linear warm-up, then linear or cosine decay. Fine-tuning clips gradients at
global norm 1 (App. B.1.1); pre-training clips on ImageNet-1k only (Table 3's
caption).

Weight-decay convention (decoupled, AdamW-style, as optax.adamw and PyTorch):

    p ← p − lr_t · (update_t + weight_decay · p)

where lr_t = config.lr × schedule(t) is the *full* learning rate. The decay
term never passes through Adam's normaliser (that is what "decoupled" means)
and it shrinks with the schedule and with the base lr. With the paper's
values (lr 8e-4, weight_decay 0.1) a kernel loses 8e-5 of its value per step
at the peak of the schedule. Only parameters matched by `config.wd_mults`
decay (default: every `kernel`, i.e. no biases, norms, embeddings or tokens).
"""

import math
import re
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from vit_jax.errors import UserError

OPTIMIZERS = ("adam", "sgd")
LR_DECAYS = ("cosine", "linear", "constant")
# Adam's first moment may be kept in bfloat16 (big_vision's ViT configs:
# optax's mu_dtype='bfloat16'): a quarter of the state per parameter less;
# the second moment, whose square root divides the update, stays float32.
ADAM_MU_DTYPES = ("float32", "bfloat16")


def learning_rate_schedule(
    base_lr: float, total_steps: int, warmup_steps: int, decay: str, end_lr_fraction: float = 0.0
) -> optax.Schedule:
    """Linear warm-up from 0 to `base_lr` over `warmup_steps`, then `decay` to
    `end_lr_fraction × base_lr` at `total_steps`."""
    if decay not in LR_DECAYS:
        raise UserError(f"lr_decay={decay!r} is unknown; choose one of {LR_DECAYS}.")
    if not 0 <= warmup_steps < total_steps:
        raise UserError(
            f"warmup_steps={warmup_steps} must be in [0, total_steps={total_steps}): "
            "lower config.warmup_steps or raise config.total_steps."
        )
    end_lr = base_lr * end_lr_fraction

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warmup = base_lr * step / max(warmup_steps, 1)
        progress = jnp.clip((step - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
        if decay == "cosine":
            decayed = end_lr + (base_lr - end_lr) * 0.5 * (1 + jnp.cos(jnp.pi * progress))
        elif decay == "linear":
            decayed = base_lr + (end_lr - base_lr) * progress
        else:
            decayed = jnp.full_like(progress, base_lr)
        return jnp.where(step < warmup_steps, warmup, decayed)

    return schedule


def path_name(path) -> str:
    """'Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel' for a pytree key path."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def tree_of_multipliers(params, rules: Sequence[tuple[str, float]], default: float) -> dict:
    """For each parameter, the multiplier of the first rule whose regex
    `re.search`es its path ('Transformer/.../kernel'), else `default`."""
    compiled = [(re.compile(pattern), float(mult)) for pattern, mult in rules]

    def multiplier(path, _):
        name = path_name(path)
        return next((mult for regex, mult in compiled if regex.search(name)), default)

    return jax.tree_util.tree_map_with_path(multiplier, params)


def _scale_by_tree(multipliers) -> optax.GradientTransformation:
    """Multiplies each update by its own constant (per-parameter lr multipliers)."""

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, m: u * m, updates, multipliers), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def _add_decayed_weights(weight_decay: float, multipliers) -> optax.GradientTransformation:
    """update + weight_decay · multiplier · param, before the learning rate is
    applied (so the decay is scaled by the full learning rate; see the top)."""

    def update(updates, state, params):
        if params is None:
            raise ValueError("weight decay needs the params: call tx.update(grads, state, params).")
        updates = jax.tree.map(
            lambda u, p, m: u + weight_decay * m * p if m else u, updates, params, multipliers
        )
        return updates, state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def check_adam_mu_dtype(mu_dtype: str) -> None:
    if mu_dtype not in ADAM_MU_DTYPES:
        raise UserError(f"adam_mu_dtype={mu_dtype!r} is unknown; choose one of {ADAM_MU_DTYPES}.")


def make_optimizer(
    config, params, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax chain of `config`: clip → Adam | SGD-momentum → decoupled weight
    decay → −learning rate (schedule, decaying to `total_steps`) → per-parameter
    lr multipliers. An optimiser or schedule it cannot build is a UserError."""
    if config.optimizer not in OPTIMIZERS:
        raise UserError(f"optimizer={config.optimizer!r} is unknown; choose one of {OPTIMIZERS}.")
    schedule = learning_rate_schedule(
        config.lr, total_steps, config.warmup_steps, config.lr_decay, config.end_lr_fraction
    )
    parts = []
    if config.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if config.optimizer == "adam":
        check_adam_mu_dtype(config.adam_mu_dtype)
        parts.append(
            optax.scale_by_adam(
                b1=config.b1, b2=config.b2, eps=config.adam_eps, mu_dtype=config.adam_mu_dtype
            )
        )
    elif config.momentum:
        parts.append(optax.trace(decay=config.momentum, nesterov=False))
    if config.weight_decay:
        decay_mults = tree_of_multipliers(params, config.wd_mults, default=0.0)
        parts.append(_add_decayed_weights(config.weight_decay, decay_mults))
    parts.append(optax.scale_by_learning_rate(schedule))
    if config.lr_mults:
        parts.append(_scale_by_tree(tree_of_multipliers(params, config.lr_mults, default=1.0)))
    return optax.chain(*parts), schedule


def ema_update(ema_params, params, decay: float, step=None):
    """Polyak averaging of the params (Table 2 uses decay 0.9999), debiased as
    Adam debiases its moments (Kingma & Ba 2015, Sec. 3; optax.ema(debias=True)):

        m_t = decay · m_(t-1) + (1 - decay) · p_t,  m_0 = 0,   ema_t = m_t / (1 - decay^t)

    kept in its debiased form, ema_t = ema_(t-1) + (p_t - ema_(t-1)) · (1 - decay) / (1 - decay^t),
    so ema_t is the decay^(t-i)-weighted mean of p_1..p_t. Whatever `ema_params`
    held before the first update (the trainer starts it as the initial params)
    gets weight 0 at t = 1: the average never keeps the initial params, whose
    head is zero when fine-tuning. An undebiased average started there would
    still be 95% initial params after 500 steps at 0.9999.

    `step` is t, the number of updates `params` has received (1 after the
    first; a traced int is fine). None gives the plain, undebiased recursion
    ema ← decay · ema + (1 - decay) · params, started wherever `ema_params` is.
    """
    if step is None:
        rate = 1.0 - decay
    else:
        # 1 - decay^t as -expm1(t · log(decay)): exact in float32 where decay^t is
        # within rounding of 1 (decay 0.9999 and small t).
        t = jnp.maximum(jnp.asarray(step, jnp.float32), 1.0)
        rate = (1.0 - decay) / -jnp.expm1(t * math.log(decay)) if decay else 1.0
        rate = jnp.where(t == 1.0, 1.0, rate)  # Exactly: no rounding residue of the start.
    return jax.tree.map(lambda e, p: (e + (p - e) * rate).astype(e.dtype), ema_params, params)


def accumulate_gradients(
    loss_and_grad: Callable, params, batch: dict, accum_steps: int, constrain: Callable = None
):
    """Mean (loss, aux), grads over `accum_steps` equal micro-batches of `batch`.

    `loss_and_grad(params, micro_batch, index) -> ((loss, aux), grads)` returns
    batch means, so the mean over equal micro-batches is exactly the gradient
    of the whole batch: a batch of 4096 trains on small hardware with the same
    update. Micro-batch j takes rows j, j+accum, j+2·accum, ... so that every
    device keeps contributing rows of its own shard to every micro-batch.
    `constrain` (optional) pins the sharding of each micro-batch.
    """
    if accum_steps == 1:
        return loss_and_grad(params, batch, 0)
    batch_size = jax.tree.leaves(batch)[0].shape[0]
    if batch_size % accum_steps:
        raise UserError(f"batch_size={batch_size} is not divisible by accum_steps={accum_steps}.")
    micro = jax.tree.map(
        lambda x: jnp.swapaxes(
            x.reshape(batch_size // accum_steps, accum_steps, *x.shape[1:]), 0, 1
        ),
        batch,
    )

    def body(carry, index_and_batch):
        index, micro_batch = index_and_batch
        if constrain is not None:
            micro_batch = constrain(micro_batch)
        out = loss_and_grad(params, micro_batch, index)
        return jax.tree.map(jnp.add, carry, out), None

    first = jax.eval_shape(loss_and_grad, params, jax.tree.map(lambda x: x[0], micro), 0)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first)
    total, _ = jax.lax.scan(body, zeros, (jnp.arange(accum_steps), micro))
    return jax.tree.map(lambda x: x / accum_steps, total)
