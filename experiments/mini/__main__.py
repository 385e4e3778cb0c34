"""python -m experiments.mini STUDY [--toy] [--seeds=0,1,2] [--out=DIR] [--data_dir=DIR]
python -m experiments.mini report     # README.md and experiments/README.md from the JSON
python -m experiments.mini check      # is every result today's code, and the text its JSON?

Runs one study (or `all`, in order) and writes STUDY.json, STUDY.md and its
PNG plots into --out; before it trains, it prints the claim and the rule that
will judge it. A full-size run starts only from a clean tree (the code under
provenance.CODE_PATHS committed), whose revision its JSON records. --toy runs
a study at a smoke-test size (tiny models, 2 steps, synthetic
Fashion-MNIST-format files unless --data_dir is given) and writes elsewhere by
default, so real results are never overwritten by toy ones. Run from the
repository root.
"""

import argparse
import dataclasses
import importlib
import os
import shlex
import sys
import time

from experiments.mini import STUDIES, provenance, readme


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.mini", description=__doc__)
    parser.add_argument("study", choices=(*STUDIES, "all", "report", "check"))
    parser.add_argument("--toy", action="store_true", help="smoke-test size (minutes → seconds)")
    parser.add_argument("--seeds", default="", help="comma-separated; default: the study's own")
    parser.add_argument("--out", default="", help="default: experiments/results")
    parser.add_argument("--workdir", default="", help="training runs; default workdirs/mini[-toy]")
    parser.add_argument(
        "--data_dir",
        default=None,
        help="Fashion-MNIST IDX folder (default: /usr/share/datasets/fashion-mnist, else TFDS)",
    )
    parser.add_argument(
        "--allow_dirty",
        action="store_true",
        help="run full size from uncommitted code (the JSON says so and check fails it)",
    )
    return parser.parse_args(argv)


ROOT = provenance.REPOSITORY
RESULTS = os.path.join(ROOT, "experiments", "results")


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
    # Imported here: report and check read JSON and git only, without JAX.
    from experiments.mini import report
    from experiments.mini.runs import Progress, Setting
    from experiments.mini.toy_data import write_toy_fashion_mnist

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
    revision = provenance.code_revision(ROOT)  # The code that runs.
    if revision.endswith(provenance.DIRTY) and not (args.toy or args.allow_dirty):
        raise SystemExit(
            f"{name}: the code under {', '.join(provenance.CODE_PATHS[:3])} has uncommitted "
            "changes; commit them first, so that the result records the revision that made it "
            "(or pass --allow_dirty for a result that check will fail)."
        )
    print(
        f"[mini] {name}: {module.TITLE}; seeds {setting.seeds}; toy={setting.toy}; "
        f"{setting.progress.planned} training runs; cost estimate {module.COST}\n"
        f"[mini] claim ({module.CLAIM.source}): {module.CLAIM.quote}\n"
        f"[mini] compared: {module.CLAIM.comparison}\n[mini] rule: {module.CLAIM.rule}",
        flush=True,
    )
    start = time.perf_counter()
    result = module.run(setting)
    result.verdict = module.judge(result.records)
    print(f"[mini] verdict: {result.verdict.verdict}", flush=True)
    for finding in result.verdict.findings:
        print(f"[mini]   {finding}", flush=True)
    paths = report.write(
        setting.out_dir,
        name,
        module,
        result,
        command=command,
        setting=setting,
        seconds=time.perf_counter() - start,
        training_seconds=sum(setting.progress.training_seconds.values()),
        revision=revision,
    )
    print(result.table, flush=True)
    minutes = (time.perf_counter() - start) / 60
    print(f"[mini] {name} done in {minutes:.1f} min: {paths}", flush=True)
    return paths


def write_text(results_dir: str) -> list[str]:
    changed = readme.rewrite(ROOT, results_dir)
    files = ", ".join(readme.SECTIONS)
    print(f"rewrote {', '.join(changed)}" if changed else f"{files}: already as the JSON")
    return changed


def check(results_dir: str) -> bool:
    """One line per study and per text file; False when any fails."""
    statuses = provenance.check_results(ROOT, results_dir, STUDIES)
    for status in statuses:
        print(status.line)
    drifted = readme.drifted(ROOT, results_dir)
    for file in readme.SECTIONS:
        reason = "differs from the JSON: run python -m experiments.mini report"
        print(f"{file}: {reason if file in drifted else 'as the JSON'}")
    return all(status.ok for status in statuses) and not drifted


def main(argv=None) -> list[str]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    results_dir = args.out or RESULTS
    if args.study == "report":
        return write_text(results_dir)
    if args.study == "check":
        if not check(results_dir):
            raise SystemExit(1)
        return []
    command = "python -m experiments.mini " + shlex.join(argv)
    names = STUDIES if args.study == "all" else (args.study,)
    return [path for name in names for path in run_study(name, args, command)]


if __name__ == "__main__":
    from absl import logging

    logging.set_verbosity(logging.INFO)  # The trainer's progress lines (steps/s, ETA).
    main()
