"""Cosine similarity between position embeddings (Fig. 7 centre).

Patch (r, c)'s small map shows the similarity of its embedding to every other
patch's. Learned 1-D embeddings that have picked up the image's 2-D layout
show bright rows and columns through (r, c); nearby patches are most alike.
"""

import jax.numpy as jnp
import numpy as np

from vit_jax.errors import UserError
from vit_jax.models.posemb import AddPositionEmbs


def position_embeddings(params, grid: tuple[int, int]) -> np.ndarray:
    """(rows·cols, D) embeddings of the patches, class token's left out.

    Built by the model's own AddPositionEmbs so `learn_1d` tables and
    `learn_2d` row/column tables are read the same way the model reads them.
    """
    tables = params["Transformer"].get("posembed_input", {})
    num_patches = grid[0] * grid[1]
    if "pos_embedding" in tables:
        kind = "learn_1d"
        _, tokens, hidden = tables["pos_embedding"].shape
        if tokens not in (num_patches, num_patches + 1):
            raise UserError(
                f"the position table has {tokens} tokens, which does not fit a "
                f"{grid[0]}x{grid[1]} grid (with or without a class token)."
            )
        has_class_token = tokens == num_patches + 1
    elif "pos_embedding_row" in tables:
        kind = "learn_2d"
        hidden = 2 * tables["pos_embedding_row"].shape[-1]
        has_class_token = "pos_embedding_cls" in tables
        tokens = num_patches + has_class_token
    else:
        raise UserError(
            "the model has no learned absolute position embeddings "
            f"(found {sorted(tables)}); posemb similarity needs learn_1d or learn_2d."
        )
    module = AddPositionEmbs(kind, grid, has_class_token)
    table = module.apply({"params": tables}, jnp.zeros((1, tokens, hidden)))[0]
    return np.asarray(table[int(has_class_token) :], np.float64)


def posemb_similarity(embeddings: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N, D) patch embeddings → (rows, cols, rows, cols) cosine similarities.

    Entry [r, c] is the map of patch (r, c) against the whole grid.
    """
    embeddings = np.asarray(embeddings, np.float64)
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    return (unit @ unit.T).reshape(*grid, *grid)
