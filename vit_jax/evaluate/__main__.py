"""`python -m vit_jax.evaluate COMMAND --checkpoint=FILE.npz ...`

Commands:
  accuracy  top-1 accuracy on a split (imagenet2012_real: ReaL accuracy, unlabelled
            images skipped); the model and resolution come from the checkpoint
  fewshot   few-shot linear probe: 1/5/10/25 shots, several seeds, mean ± std

The VTAB-1k sweep fine-tunes, so it is an experiment: `python -m experiments.vtab`.
"""

import argparse
import json
import sys

import jax
from absl import logging

from vit_jax.data.registry import known_names
from vit_jax.errors import UsageError, cli
from vit_jax.evaluate import accuracy, fewshot


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m vit_jax.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("accuracy", "fewshot"))
    parser.add_argument("--checkpoint", required=True, help=".npz file or transformers directory")
    parser.add_argument("--model", help="registered model name; default: read from the checkpoint")
    parser.add_argument("--resolution", type=int, help="input size; default: the checkpoint's")
    parser.add_argument("--data_dir", help="TFDS data directory")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--preprocess", help="eval preprocessing; default: resize + [-1, 1]")
    accuracy_args = parser.add_argument_group("accuracy")
    accuracy_args.add_argument(
        "--dataset", help="required: a TFDS name, vtab/<task>, digits or folder:PATH"
    )
    accuracy_args.add_argument("--split", default="test")
    fewshot_args = parser.add_argument_group("fewshot")
    fewshot_args.add_argument("--datasets", default="imagenet2012", help="comma-separated")
    fewshot_args.add_argument("--train_split", default="train", help="pool the shots come from")
    fewshot_args.add_argument("--test_split", default="test")
    fewshot_args.add_argument("--shots", default="1,5,10,25")
    fewshot_args.add_argument("--seeds", default="0,1,2")
    fewshot_args.add_argument("--l2_reg", type=float, default=fewshot.DEFAULT_L2_REG)
    args = parser.parse_args(argv)
    if args.command == "accuracy" and not args.dataset:
        # Which data a checkpoint is scored on is the user's choice, never a default.
        raise UsageError(
            "accuracy needs --dataset=NAME (and --data_dir=DIR for TFDS data); NAME is one of "
            f"{', '.join(known_names())}."
        )
    return args


def _integers(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def _preprocess(args, size: int) -> str:
    return args.preprocess or f"resize({size})|value_range(-1,1)"


def run_accuracy(args, params, loaded) -> dict:
    from vit_jax import data

    logits_fn = jax.jit(lambda p, x: loaded.module.apply({"params": p}, x, train=False))
    batches = data.get_iterator(
        args.dataset,
        args.split,
        batch_size=args.batch_size,
        preprocess=_preprocess(args, loaded.image_size[0]),
        train=False,
        data_dir=args.data_dir,
        process_index=0,
        process_count=1,
    )
    logging.info("%s[%s]: %d batches", args.dataset, args.split, len(batches))
    return accuracy.accuracy(logits_fn, params, batches)


def run_fewshot(args, params, loaded) -> dict:
    datasets = {
        name: fewshot.data_from_registry(
            name,
            args.train_split,
            args.test_split,
            preprocess=_preprocess(args, loaded.image_size[0]),
            batch_size=args.batch_size,
            data_dir=args.data_dir,
        )
        for name in args.datasets.split(",")
    }
    features_fn = fewshot.representation_fn(loaded.module)
    return fewshot.evaluate(
        features_fn, params, datasets, _integers(args.shots), _integers(args.seeds), args.l2_reg
    )


def main(argv=None):
    from vit_jax.infer import load_model

    args = parse_args(argv)
    logging.set_verbosity(logging.INFO)
    params, loaded = load_model(args.checkpoint, args.model, args.resolution)
    run = run_accuracy if args.command == "accuracy" else run_fewshot
    result = run(args, params, loaded)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    cli(main)(sys.argv[1:])
