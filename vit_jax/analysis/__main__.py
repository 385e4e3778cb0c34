"""`python -m vit_jax.analysis COMMAND --checkpoint=FILE.npz [--out_dir=DIR] [IMAGE ...]`

Commands (each writes DIR/NAME.png and DIR/NAME.npz with the numbers):
  rollout    attention rollout from the output token to the image (Fig. 6)
  posemb     cosine similarity of the position embeddings (Fig. 7 centre)
  distance   mean attention distance per head against depth (Fig. 7 right)
  filters    principal components of the patch-embedding filters (Fig. 7 left)
  all        every command above
Without IMAGE arguments, rollout and distance use scikit-image's sample photos.
"""

import argparse
import sys

from absl import logging

from vit_jax.analysis import commands
from vit_jax.errors import cli
from vit_jax.infer import load_model

COMMANDS = ("rollout", "posemb", "distance", "filters")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m vit_jax.analysis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=COMMANDS + ("all",))
    parser.add_argument("images", nargs="*", help="image files; default: sample photos")
    parser.add_argument("--checkpoint", required=True, help=".npz file written by save_npz")
    parser.add_argument("--model", help="registered model name; default: read from the checkpoint")
    parser.add_argument("--resolution", type=int, help="input size; default: the checkpoint's")
    parser.add_argument("--out_dir", default="analysis", help="where figures and numbers go")
    parser.add_argument("--components", type=int, default=28, help="filter components to show")
    return parser.parse_intermixed_args(argv)


def main(argv=None) -> list[str]:
    args = parse_args(argv)
    logging.set_verbosity(logging.INFO)
    params, loaded = load_model(args.checkpoint, args.model, args.resolution)
    selected = COMMANDS if args.command == "all" else (args.command,)
    written = []
    if {"rollout", "distance"} & set(selected):
        names, images = commands.load_photos(args.images, loaded)
    for command in selected:
        logging.info("%s of %s", command, args.checkpoint)
        if command == "rollout":
            written += commands.rollout(params, loaded, names, images, args.out_dir)
        elif command == "distance":
            written += commands.attention_distance(params, loaded, names, images, args.out_dir)
        elif command == "posemb":
            written += commands.posemb(params, loaded, args.out_dir)
        else:
            written += commands.filters(params, loaded, args.out_dir, args.components)
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    cli(main)(sys.argv[1:])
