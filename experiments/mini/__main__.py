"""python -m experiments.mini STUDY [--toy] [--seeds=0,1,2] [--out=DIR] [--data_dir=DIR]

Runs one study (or `all`, in order) and writes STUDY.json, STUDY.md and its
PNG plots into --out. --toy runs it at a smoke-test size (tiny models, 2
steps, synthetic Fashion-MNIST-format files unless --data_dir is given) and
writes elsewhere by default, so real results are never overwritten by toy
ones. Run from the repository root.
"""

import argparse
import dataclasses
import importlib
import os
import shlex
import sys
import time

from experiments.mini import STUDIES, report
from experiments.mini.runs import Progress, Setting
from experiments.mini.toy_data import write_toy_fashion_mnist


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.mini", description=__doc__)
    parser.add_argument("study", choices=(*STUDIES, "all"))
    parser.add_argument("--toy", action="store_true", help="smoke-test size (minutes → seconds)")
    parser.add_argument("--seeds", default="", help="comma-separated; default: the study's own")
    parser.add_argument("--out", default="", help="default: experiments/results")
    parser.add_argument("--workdir", default="", help="training runs; default workdirs/mini[-toy]")
    parser.add_argument(
        "--data_dir",
        default=None,
        help="Fashion-MNIST IDX folder (default: /usr/share/datasets/fashion-mnist, else TFDS)",
    )
    return parser.parse_args(argv)


def _seeds(text: str, default: tuple[int, ...]) -> tuple[int, ...]:
    if not text:
        return default
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise SystemExit(
            f"--seeds={text!r}: give integers separated by commas, e.g. 0,1,2."
        ) from None


def run_study(name: str, args, command: str) -> list[str]:
    module = importlib.import_module(f"experiments.mini.{name}")
    work_dir = args.workdir or ("workdirs/mini-toy" if args.toy else "workdirs/mini")
    data_dir = args.data_dir
    if args.toy and data_dir is None:
        data_dir = write_toy_fashion_mnist(os.path.join(work_dir, "toy-fashion-mnist"))
    default_out = os.path.join(work_dir, "results") if args.toy else "experiments/results"
    setting = Setting(
        toy=args.toy,
        seeds=_seeds(args.seeds, (0,) if args.toy else module.DEFAULT_SEEDS),
        out_dir=args.out or default_out,
        work_dir=work_dir,
        data_dir=data_dir,
    )
    setting = dataclasses.replace(setting, progress=Progress(module.planned_runs(setting)))
    print(
        f"[mini] {name}: {module.TITLE}; seeds {setting.seeds}; toy={setting.toy}; "
        f"{setting.progress.planned} training runs",
        flush=True,
    )
    start, revision = time.perf_counter(), report.git_revision()  # The code that runs.
    result = module.run(setting)
    paths = report.write(
        setting.out_dir,
        name,
        result,
        command=command,
        setting=setting,
        seconds=time.perf_counter() - start,
        revision=revision,
    )
    print(result.table, flush=True)
    minutes = (time.perf_counter() - start) / 60
    print(f"[mini] {name} done in {minutes:.1f} min: {paths}", flush=True)
    return paths


def main(argv=None) -> list[str]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = "python -m experiments.mini " + shlex.join(argv)
    names = STUDIES if args.study == "all" else (args.study,)
    return [path for name in names for path in run_study(name, args, command)]


if __name__ == "__main__":
    from absl import logging

    logging.set_verbosity(logging.INFO)  # The trainer's progress lines (steps/s, ETA).
    main()
