"""`python -m vit_jax.kernels build`: builds the optional kernels for this
CPU and jaxlib into the cache, ahead of a run with config.attention='cpu'."""

import sys

from vit_jax.kernels import cpu_attention


def main(argv: list[str]) -> int:
    if argv != ["build"]:
        print("usage: python -m vit_jax.kernels build", file=sys.stderr)
        return 2
    library = cpu_attention.load()
    print(f"Built the fused CPU attention kernel: {library}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
