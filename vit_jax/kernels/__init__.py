"""Optional speed back-ends, apart from the model: each enters it as a function
(an `attention_fn`) and runs only where `config.attention` chooses it.

  cpu_attention  a fused float32 attention kernel for XLA:CPU (C++, XLA FFI)

`python -m vit_jax.kernels build` builds them for this machine; "auto" takes
a built kernel where its target is the step's (one CPU device, float32).
"""
