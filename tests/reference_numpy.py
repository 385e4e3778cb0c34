"""An independent plain-numpy forward pass, written from the paper's Eq. 1-4 and
the official code's layers (its MlpBlock's GELU is flax's tanh form).

It shares no code with vit_jax.models: tests compare the Flax modules with it.
"""

import numpy as np
from scipy.special import erf

EPS = 1e-6


def layer_norm(x, p, eps=EPS):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu(x, approximate=True):
    if approximate:  # flax's nn.gelu default, which the official MlpBlock calls.
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention(x, p, bias=None, offset_keys=None):
    """Multi-head self-attention; kernels are (D, heads, head_dim) as in the
    checkpoints. `offset_keys` (2T-1, heads, head_dim): App. D.4's relative
    attention, the query against the key of each pair's offset q - k, added
    to the logits."""
    q = np.einsum("btd,dhk->bthk", x, p["query"]["kernel"]) + p["query"]["bias"]
    k = np.einsum("btd,dhk->bthk", x, p["key"]["kernel"]) + p["key"]["bias"]
    v = np.einsum("btd,dhk->bthk", x, p["value"]["kernel"]) + p["value"]["bias"]
    logits = np.einsum("bqhk,bthk->bhqt", q, k) / np.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    if offset_keys is not None:
        tokens = q.shape[1]
        for i in range(tokens):
            for j in range(tokens):
                key_ij = offset_keys[i - j + tokens - 1]  # (heads, head_dim)
                logits[:, :, i, j] += np.einsum("bhk,hk->bh", q[:, i], key_ij) / np.sqrt(
                    q.shape[-1]
                )
    out = np.einsum("bhqt,bthk->bqhk", softmax(logits), v)
    return np.einsum("bqhk,hkd->bqd", out, p["out"]["kernel"]) + p["out"]["bias"]


def mlp(x, p):
    h = gelu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def patchify(images, patch):
    """(B, H, W, C) -> (B, N, P*P*C), patches in row-major order."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // patch, patch, w // patch, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), -1)


def relative_bias(table, rows, cols, has_cls):
    """Per-head bias from a ((2r-1)(2c-1)+3, heads) table, looked up by offset."""
    coords = [(r, c) for r in range(rows) for c in range(cols)]
    n = len(coords)
    offsets = (2 * rows - 1) * (2 * cols - 1)
    size = n + 1 if has_cls else n
    bias = np.zeros((table.shape[1], size, size))
    start = 1 if has_cls else 0
    for i, (ri, ci) in enumerate(coords):
        for j, (rj, cj) in enumerate(coords):
            index = (ri - rj + rows - 1) * (2 * cols - 1) + (ci - cj + cols - 1)
            bias[:, start + i, start + j] = table[index]
    if has_cls:
        bias[:, 0, 1:] = table[offsets][:, None]
        bias[:, 1:, 0] = table[offsets + 1][:, None]
        bias[:, 0, 0] = table[offsets + 2]
    return bias


def vit_forward(params, images, patch, classifier="token", posemb="learn_1d"):
    """Eq. 1-4: patch embedding, [class] token, position embeddings, L pre-norm
    blocks, final LayerNorm, head."""
    kernel = params["embedding"]["kernel"]  # (P, P, C, D)
    x = patchify(images, patch) @ kernel.reshape(-1, kernel.shape[-1])
    x = x + params["embedding"]["bias"]
    b, n, d = x.shape
    rows = images.shape[1] // patch
    cols = images.shape[2] // patch
    has_cls = classifier == "token"
    if has_cls:
        x = np.concatenate([np.broadcast_to(params["cls"], (b, 1, d)), x], axis=1)
    enc = params["Transformer"]
    pe = enc.get("posembed_input", {})
    if posemb == "learn_1d":
        x = x + pe["pos_embedding"]
    elif posemb == "learn_2d":
        grid = np.array(
            [
                np.concatenate([pe["pos_embedding_row"][r], pe["pos_embedding_col"][c]])
                for r in range(rows)
                for c in range(cols)
            ]
        )
        if has_cls:
            grid = np.concatenate([pe["pos_embedding_cls"][0], grid], axis=0)
        x = x + grid[None]
    layer = 0
    while f"encoderblock_{layer}" in enc:
        blk = enc[f"encoderblock_{layer}"]
        bias, offset_keys = None, None
        if posemb == "relative_bias":
            bias = relative_bias(enc[f"relpos_{layer}"]["rel_embedding"], rows, cols, has_cls)
        if posemb == "relative":
            offset_keys = enc[f"relpos_{layer}"]["rel_keys"]
        x = x + attention(
            layer_norm(x, blk["LayerNorm_0"]),
            blk["MultiHeadDotProductAttention_0"],
            bias,
            offset_keys,
        )
        x = x + mlp(layer_norm(x, blk["LayerNorm_1"]), blk["MlpBlock_0"])
        layer += 1
    x = layer_norm(x, enc["encoder_norm"])
    y = x[:, 0] if has_cls else x.mean(axis=1)
    if "pre_logits" in params:
        y = np.tanh(y @ params["pre_logits"]["kernel"] + params["pre_logits"]["bias"])
    return y @ params["head"]["kernel"] + params["head"]["bias"]


# ----- ResNet pieces for the hybrid stem -----


def conv2d_same(x, kernel, stride):
    """NHWC convolution with TensorFlow/Flax 'SAME' padding, by explicit windows."""
    kh, kw, _, _ = kernel.shape
    b, h, w, c = x.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + kh - h, 0)
    pad_w = max((out_w - 1) * stride + kw - w, 0)
    x = np.pad(
        x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    )
    out = np.zeros((b, out_h, out_w, kernel.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            window = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j] = np.einsum("bhwc,hwco->bo", window, kernel)
    return out


def standardize(kernel, eps=1e-5):
    mean = kernel.mean(axis=(0, 1, 2))
    return (kernel - mean) / (kernel.std(axis=(0, 1, 2)) + eps)


def group_norm(x, p, groups=32, eps=1e-6):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    g = (g - mean) / np.sqrt(var + eps)
    return g.reshape(b, h, w, c) * p["scale"] + p["bias"]


def max_pool_same(x, size=3, stride=2):
    b, h, w, c = x.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + size - h, 0)
    pad_w = max((out_w - 1) * stride + size - w, 0)
    x = np.pad(
        x,
        ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
        constant_values=-np.inf,
    )
    out = np.zeros((b, out_h, out_w, c))
    for i in range(out_h):
        for j in range(out_w):
            out[:, i, j] = x[:, i * stride : i * stride + size, j * stride : j * stride + size].max(
                axis=(1, 2)
            )
    return out


def relu(x):
    return np.maximum(x, 0)


def residual_unit(x, p, stride):
    conv = lambda y, name, s=1: conv2d_same(y, standardize(p[name]["kernel"]), s)  # noqa: E731
    residual = x
    if "conv_proj" in p:
        residual = group_norm(conv(x, "conv_proj", stride), p["gn_proj"])
    y = relu(group_norm(conv(x, "conv1"), p["gn1"]))
    y = relu(group_norm(conv(y, "conv2", stride), p["gn2"]))
    y = group_norm(conv(y, "conv3"), p["gn3"])
    return relu(residual + y)


def hybrid_stem_forward(params, images):
    """Root (std-conv 7x7/2, GN, ReLU, max-pool 3x3/2) then the bottleneck stages."""
    x = conv2d_same(images, standardize(params["conv_root"]["kernel"]), 2)
    x = max_pool_same(relu(group_norm(x, params["gn_root"])))
    stage = 1
    while f"block{stage}" in params:
        unit = 1
        while f"unit{unit}" in params[f"block{stage}"]:
            stride = 2 if stage > 1 and unit == 1 else 1
            x = residual_unit(x, params[f"block{stage}"][f"unit{unit}"], stride)
            unit += 1
        stage += 1
    return x
