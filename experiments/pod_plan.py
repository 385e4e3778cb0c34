"""The pod view of the paper's experiments: for every pre-training row of Tables
2/3/6 and the fine-tuning rows of Tables 2/4 at 384/512 px, the smallest TPU v3
slice (the paper's hardware) and the smallest H100 count on which the real
training step fits at the paper's batch, with the mesh and remat that make it
fit, XLA's cost-model step time (TPU) and the core-days it implies beside
Table 2's.

    python -m experiments.pod_plan                       # compile everything again
    python -m experiments.pod_plan --reuse               # take compiles from the JSON
    python -m experiments.pod_plan --only ViT-H_14 --reuse

Every number comes from `vit_jax.compile.compile_train_step` (libtpu's and the
CUDA plugin's compilers on this CPU): memory is the compiler's buffer
assignment; step times are XLA's TPU cost model, a lower bound and not a
measurement; GPU step times wait for a real GPU (experiments/bench/gpu.sh).
Each compile's report is kept in experiments/results/pod_plan.json, which
--reuse reads instead of compiling again; the Markdown table is rewritten after
every compile, so an interrupted run keeps what it finished.
"""

import argparse
import datetime
import json
import pathlib
import platform
import sys
import time

import jax

import vit_jax.compile as vc
from configs import vit_finetune, vit_pretrain
from experiments import paper_results
from vit_jax.models import model_options
from vit_jax.targets import get_target, prepare_offline_compilers

RESULTS = pathlib.Path("experiments/results")
JSON_PATH, MD_PATH = RESULTS / "pod_plan.json", RESULTS / "pod_plan.md"
TPU_SLICES = ("tpu-v3-8", "tpu-v3-32", "tpu-v3-64", "tpu-v3-128", "tpu-v3-256", "tpu-v3-512")
GPU_COUNTS = ("h100x8", "h100x16@2", "h100x32@4", "h100x64@8")
FINETUNE_DATASET = "imagenet2012"  # The class count barely changes the step's memory.


def rows() -> list[dict]:
    """One row per distinct compiled program: pre-training (model, dataset) with
    its epoch variants, and fine-tuning (model, resolution)."""
    out, seen = [], {}
    for model, dataset, epochs, *_ in vit_pretrain.rows():
        key = (model, dataset)
        if key in seen:
            seen[key]["epochs"].append(epochs)
            continue
        spec = f"configs/vit_pretrain.py:model={model},dataset={dataset},epochs={epochs}"
        row = {"kind": "pre-train", "model": model, "dataset": dataset, "epochs": [epochs],
               "spec": spec}  # fmt: skip
        seen[key] = row
        out.append(row)
    finetune = [(m, False) for m in vit_pretrain.VIT_IMAGENET_MODELS]
    finetune += [(m, True) for m in vit_finetune.TABLE_2_RESOLUTION]
    for model, table2 in finetune:
        arg = f"model={model},dataset={FINETUNE_DATASET}" + (",table2=true" if table2 else "")
        out.append({"kind": "fine-tune", "model": model, "dataset": FINETUNE_DATASET,
                    "table2": table2, "spec": f"configs/vit_finetune.py:{arg}"})  # fmt: skip
    return out


def load_config(spec: str):
    import importlib

    path, _, arg = spec.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return module.get_config(arg or None)


def candidates(target: str) -> list[tuple[int, bool]]:
    """(fsdp, remat) to try on `target`, cheapest in communication and compute first."""
    devices = get_target(target).num_devices
    fsdp = min(devices, 16)
    return [(1, False), (fsdp, False), (fsdp, True)]


def compile_key(spec: str, target: str, fsdp: int, remat: bool, dtype: str | None) -> str:
    return f"{spec} | {target} | fsdp={fsdp} remat={remat} dtype={dtype or 'config'}"


class Cache:
    def __init__(self, reuse: bool):
        self.reuse = reuse
        self.data = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {}
        self.data.setdefault("compiles", {})

    def compile(self, spec: str, target: str, fsdp: int, remat: bool, dtype: str | None):
        key = compile_key(spec, target, fsdp, remat, dtype)
        if self.reuse and key in self.data["compiles"]:
            return self.data["compiles"][key]
        config = vc.apply_mesh_options(load_config(spec), fsdp=fsdp, remat=remat, dtype=dtype)
        print(f"  compiling {key} ...", flush=True)
        start = time.perf_counter()
        report = vc.compile_train_step(config, target)
        report["compiled_on"] = datetime.date.today().isoformat()
        print(f"    {'fits' if report['fits'] else 'does not fit'} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
        self.data["compiles"][key] = report
        return report

    def save(self, command: str, plan: list[dict]):
        self.data["command"] = command
        self.data["plan"] = plan
        RESULTS.mkdir(parents=True, exist_ok=True)
        JSON_PATH.write_text(json.dumps(self.data, indent=1, default=str) + "\n")


def smallest_fit(cache: Cache, spec: str, targets, dtype: str | None):
    """The first (target, fsdp, remat) whose step fits, with its report; tries
    are recorded. None when nothing in `targets` fits."""
    tried = []
    can_remat = "remat" in model_options(load_config(spec).model_name)  # Not the ResNets.
    for target in targets:
        for fsdp, remat in candidates(target):
            if remat and not can_remat:
                continue
            report = cache.compile(spec, target, fsdp, remat, dtype)
            tried.append(compile_key(spec, target, fsdp, remat, dtype))
            if report["fits"]:
                return {"target": target, "fsdp": fsdp, "remat": remat, "key": tried[-1],
                        "tried": tried}  # fmt: skip
    return {"target": None, "tried": tried}


def paper_core_days(row) -> str:
    days = [
        paper_results.table_2_core_days(row["model"], row["dataset"], e)
        for e in row.get("epochs", [])
    ]
    return ", ".join(f"{d / 1000:g}k" for d in days if d) or ""


def _gib(n) -> str:
    return f"{n / 2**30:.1f}"


def _placement_cells(search: dict, report: dict, smallest: str) -> list[str]:
    """Target (and where the search started, when not at the smallest),
    mesh, remat and memory of the placement that fit."""
    first = search["tried"][0].split(" | ")[1]
    searched = "" if first == smallest else f" (searched from {first})"
    return [
        search["target"] + searched,
        "×".join(str(v) for v in report["mesh"].values()),
        "yes" if search["remat"] else "no",
        _gib(report["memory"]["total_bytes"]),
    ]


def markdown(cache: Cache, plan: list[dict], command: str) -> str:
    compiles = cache.data["compiles"]
    lines = [
        "# Pod plan: the smallest TPU v3 slice and H100 count for each paper run",
        "",
        f"Made by `{command}` on {datetime.date.today().isoformat()} "
        f"({platform.machine()} CPU host, jax {jax.__version__}, libtpu and the CUDA 12 "
        "plugin from requirements-compile.txt). Nothing here ran on a TPU or a GPU.",
        "",
        "- **memory**: the compiler's buffer assignment per device (GiB) for the real "
        "training step (`vit_jax.step.build_trainer`, the config's batch, donated state).",
        "- **step s**: XLA's TPU cost model (`optimal_seconds`), a lower bound, not a "
        "measurement; **MFU≤** is the model-FLOPs utilisation it implies (an upper bound).",
        "- **core-days ≥**: the config's total steps × step time × cores, beside Table 2's "
        "measured TPUv3-core-days where the paper gives them.",
        "- **H100**: bf16 compute; XLA:GPU has no cost model offline, so GPU step times and "
        "MFU wait for a real GPU (experiments/bench/gpu.sh). fits = buffer assignment ≤ 79.1 GiB.",
        "- mesh: data × fsdp (fsdp shards parameters and optimizer state, ZeRO-3 style).",
        "",
        "| run | batch | TPU v3 slice | mesh | remat | memory | step s | MFU≤ | core-days ≥ "
        "| Table 2 | H100s | mesh | remat | memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in plan:
        row = entry["row"]
        name = f"{row['kind']} {row['model']} {row['dataset']}"
        if row["kind"] == "pre-train":
            name += " " + "/".join(map(str, row["epochs"])) + " ep"
        else:
            name += " (Table 2 res.)" if row["table2"] else ""
        cells = [name]
        tpu, gpu = entry.get("tpu"), entry.get("gpu")
        report = compiles.get(tpu["key"]) if tpu and tpu.get("target") else None
        batch = report["config"]["batch_size"] if report else ""
        cells.append(f"{batch} @{report['config']['image_size']}px" if report else "")
        if report:
            days = []
            for epochs in row.get("epochs", [None]):
                steps = report["config"]["total_steps"]
                if epochs and row["epochs"] and epochs != row["epochs"][0]:
                    steps = steps * epochs / row["epochs"][0]
                if "cost_model_step_seconds" in report:
                    s = report["cost_model_step_seconds"]
                    days.append(f"{steps * s * report['num_devices'] / 86400:,.0f}")
            cells += _placement_cells(tpu, report, TPU_SLICES[0])
            cells += [
                f"{report.get('cost_model_step_seconds', float('nan')):.3f}",
                f"{100 * report.get('mfu_bound', float('nan')):.0f}%",
                " / ".join(days),
                paper_core_days(row),
            ]
        elif tpu:
            cells += ["none up to " + TPU_SLICES[-1], "", "", "", "", "", "", paper_core_days(row)]
        else:
            cells += ["(not compiled yet)", "", "", "", "", "", "", paper_core_days(row)]
        greport = compiles.get(gpu["key"]) if gpu and gpu.get("target") else None
        if greport:
            cells += _placement_cells(gpu, greport, GPU_COUNTS[0])
        else:
            cells += ["none up to 64" if gpu else "(not compiled yet)", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Every try (also those that did not fit, with the compiler's RESOURCE_EXHAUSTED "
        "numbers) is in pod_plan.json under `compiles`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.pod_plan", description=__doc__)
    parser.add_argument("--reuse", action="store_true", help="take compiles from the JSON")
    parser.add_argument("--only", help="only rows whose model contains this")
    parser.add_argument("--kind", choices=("pre-train", "fine-tune"), help="only these rows")
    parser.add_argument("--no-gpu", action="store_true", help="skip the H100 search")
    parser.add_argument("--no-tpu", action="store_true", help="skip the TPU v3 search")
    parser.add_argument(
        "--start-tpu", default=TPU_SLICES[0], choices=TPU_SLICES,
        help="search from this slice (smaller ones are not tried: the table says so)",
    )  # fmt: skip
    parser.add_argument("--start-gpu", default=GPU_COUNTS[0], choices=GPU_COUNTS)
    args = parser.parse_args(argv)
    prepare_offline_compilers()
    command = " ".join(["python -m experiments.pod_plan", *(argv or [])])
    cache = Cache(args.reuse)
    previous = {e["row"]["spec"]: e for e in cache.data.get("plan", [])}
    plan = []
    selected = [
        r for r in rows()
        if (not args.only or args.only in r["model"]) and (not args.kind or r["kind"] == args.kind)
    ]  # fmt: skip
    for row in rows():
        entry = previous.get(row["spec"], {"row": row})
        entry["row"] = row
        plan.append(entry)
    for index, row in enumerate(selected, 1):
        entry = next(e for e in plan if e["row"]["spec"] == row["spec"])
        print(f"[{index}/{len(selected)}] {row['spec']}", flush=True)
        if not args.no_tpu:
            slices = TPU_SLICES[TPU_SLICES.index(args.start_tpu) :]
            entry["tpu"] = smallest_fit(cache, row["spec"], slices, None)
            cache.save(command, plan)
            MD_PATH.write_text(markdown(cache, plan, command))
        if not args.no_gpu:
            counts = GPU_COUNTS[GPU_COUNTS.index(args.start_gpu) :]
            entry["gpu"] = smallest_fit(cache, row["spec"], counts, "bfloat16")
            cache.save(command, plan)
            MD_PATH.write_text(markdown(cache, plan, command))
    cache.save(command, plan)
    MD_PATH.write_text(markdown(cache, plan, command))
    print(f"Wrote {MD_PATH} and {JSON_PATH}.")


if __name__ == "__main__":
    main(sys.argv[1:])
