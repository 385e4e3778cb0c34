"""Back-end choice and the optional speed kernels, apart from the model: each
kernel enters it as a function (an `attention_fn`), chosen by
`backends.choose_attention` from the config and the step's devices.

  backends         which attention function a step runs (config.attention)
  fused            a fused kernel as an attention_fn, with XLA's path for the rest
  cudnn_attention  cuDNN's fused attention (GPU, 16-bit): what "auto" takes there
  cpu_attention    a fused float32 attention kernel for XLA:CPU (C++, XLA FFI),
                   only where config.attention="cpu" asks for it

`python -m vit_jax.kernels build` builds the CPU kernel ahead of a run.
"""
