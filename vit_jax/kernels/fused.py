"""A fused attention kernel as an `attention_fn`: the kernel computes the
plain softmax(q·kᵀ/√d)·v, and XLA's path (vit_jax.models.attention) serves
what a fused kernel does not do here."""

from collections.abc import Callable

from vit_jax.models.attention import dot_product_attention


def with_xla_fallback(plain: Callable, serves: Callable = lambda query: True) -> Callable:
    """An `attention_fn` that computes softmax(q·kᵀ/√d)·v with `plain(query,
    key, value)`, and takes `dot_product_attention` for maps, attention
    dropout, a bias, a mask, or queries `serves` refuses (a dtype)."""

    def attention_fn(
        query,
        key,
        value,
        bias=None,
        mask=None,
        *,
        dropout_rng=None,
        dropout_rate: float = 0.0,
        deterministic: bool = True,
        module=None,
    ):
        dropout = not deterministic and dropout_rate > 0.0
        if bias is None and mask is None and module is None and not dropout and serves(query):
            return plain(query, key, value)
        return dot_product_attention(
            query, key, value, bias, mask, dropout_rng=dropout_rng, dropout_rate=dropout_rate,
            deterministic=deterministic, module=module,
        )  # fmt: skip

    return attention_fn
