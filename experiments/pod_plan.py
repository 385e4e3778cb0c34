"""The pod view of the paper's experiments: for every pre-training row of Tables
2/3/6 and the fine-tuning rows of Tables 2/4 at 384/512 px, the smallest,
the cheapest (core-days) and the fastest TPU v3 placement (the paper's
hardware) and the smallest H100 count on which the real training step fits at
the paper's batch, with the mesh, remat policy, gradient accumulation and
Adam μ dtype, XLA's cost-model step time (TPU) and the core-days it implies
beside Table 2's; then the paper's hardware statements checked, the scan,
μ-dtype and bf16-compute studies, and what bounds each ViT row's MFU.

    python -m experiments.pod_plan                       # compile everything again
    python -m experiments.pod_plan --reuse               # take compiles from the JSON
    python -m experiments.pod_plan --only ViT-H_14 --reuse
    python -m experiments.pod_plan --reuse --scan-study --mu-study --dtype-study

Every number comes from `vit_jax.compile.compile_train_step` (libtpu's and the
CUDA plugin's compilers on this CPU): memory is the compiler's buffer
assignment; step times are XLA's TPU cost model, a lower bound and not a
measurement; GPU step times wait for a real GPU (experiments/bench/gpu.sh).
Each compile's report is kept in experiments/results/pod_plan.json, which
--reuse reads instead of compiling again; the Markdown table is rewritten after
every compile, so an interrupted run keeps what it finished.
"""

import argparse
import dataclasses
import datetime
import functools
import json
import math
import multiprocessing
import pathlib
import platform
import re
import signal
import sys
import time

import jax
import jax.numpy as jnp

import vit_jax.compile as vc
from configs import vit_finetune, vit_pretrain
from experiments import paper_results
from experiments.mini.provenance import code_revision
from vit_jax.models import costs, get_model, model_options
from vit_jax.targets import get_target, prepare_offline_compilers

RESULTS = pathlib.Path("experiments/results")
JSON_PATH, MD_PATH = RESULTS / "pod_plan.json", RESULTS / "pod_plan.md"
TPU_SLICES = ("tpu-v3-8", "tpu-v3-32", "tpu-v3-64", "tpu-v3-128", "tpu-v3-256", "tpu-v3-512")
GPU_COUNTS = ("h100x8", "h100x16@2", "h100x32@4", "h100x64@8")
FINETUNE_DATASET = "imagenet2012"  # The class count barely changes the step's memory.
ACCUM_STEPS = (2, 4, 8, 16)  # Micro-batches tried where nothing fits on the smallest slice.
# "Fastest within budget": the fewest days of wall time among placements that
# cost at most this multiple of the cheapest one's core-days.
FASTEST_BUDGET = 1.25
# Rows whose smallest placement is compiled again with the blocks scanned
# (compile time, memory and cost-model step against the unrolled step).
SCAN_STUDY = (("ViT-B_16", "jft"), ("ViT-H_14", "jft"))
# Rows whose smallest placement is compiled again with Adam's first moment in
# bfloat16: the memory it saves, sharded (FSDP) and replicated (data parallel).
MU_STUDY = (("ViT-B_16", "jft"), ("ViT-L_16", "jft"))
# ViT rows whose cheapest placement is compiled again with bfloat16 compute
# (activations; weights and optimiser state stay float32): how much of the MFU
# gap is element-wise work and memory traffic in float32. It changes the
# numerics, so it is a measurement beside the plan, never a placement in it.
DTYPE_STUDY = (("ViT-B_16", "jft"), ("ViT-L_32", "jft"), ("ViT-L_16", "jft"),
               ("ViT-H_14", "jft"))  # fmt: skip


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


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where and how a step runs: the target, the mesh (data × fsdp), remat
    ('none' or a policy of vit_jax.models.vit.REMAT_POLICIES), gradient
    accumulation (micro-batches of the paper's global batch), Adam's
    first-moment dtype and the scan over blocks."""

    target: str
    fsdp: int
    remat: str = "none"
    accum: int = 1
    mu_dtype: str = "float32"
    scan: bool = False

    def key(self, spec: str, dtype: str | None) -> str:
        remat = {"none": "False", "full": "True"}.get(self.remat, self.remat)
        key = f"{spec} | {self.target} | fsdp={self.fsdp} remat={remat} dtype={dtype or 'config'}"
        extras = [f"accum={self.accum}"] if self.accum > 1 else []
        extras += [f"mu={self.mu_dtype}"] if self.mu_dtype != "float32" else []
        extras += ["scan=True"] if self.scan else []
        return " ".join([key, *extras])

    @classmethod
    def of(cls, report: dict) -> "Placement":
        """The placement a fitting compile's report was made with."""
        model, config = report["config"]["model"], report["config"]
        remat = model.get("remat_policy", "full") if model.get("remat") == "True" else "none"
        return cls(
            report["target"],
            report["mesh"]["fsdp"],
            remat,
            config.get("accum_steps", 1),
            config.get("adam_mu_dtype", "float32"),
            model.get("scan") == "True",
        )

    def options(self) -> dict:
        """apply_mesh_options' arguments."""
        return dict(
            fsdp=self.fsdp,
            remat={"none": False, "full": True}.get(self.remat, self.remat),
            accum_steps=self.accum,
            adam_mu_dtype=self.mu_dtype,
            scan=self.scan or None,
        )


def candidates(target: str) -> list[Placement]:
    """Placements to try on `target`, cheapest in communication and compute first."""
    fsdp = min(get_target(target).num_devices, 16)
    return [Placement(target, 1), Placement(target, fsdp), Placement(target, fsdp, "full")]


HOST_MEMORY_RESERVE = 1 << 30  # Left to the rest of the host when a compile grows.


def _proc_bytes(path: str, field: str) -> int | None:
    """A "FIELD: N kB" line of a /proc file, in bytes; None when the file is
    gone (a child that has just exited) or has no such line (a zombie)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return None


def _host_memory_bytes(field: str) -> int:
    value = _proc_bytes("/proc/meminfo", field)
    if value is None:
        raise RuntimeError(f"/proc/meminfo has no {field}")
    return value


def _compile_child(spec: str, placement: "Placement", dtype, connection) -> None:
    prepare_offline_compilers()
    try:
        config = vc.apply_mesh_options(load_config(spec), dtype=dtype, **placement.options())
        connection.send(("report", vc.compile_train_step(config, placement.target)))
    except Exception as error:  # noqa: BLE001 - handed to the parent, which raises it.
        connection.send(("error", f"{type(error).__name__}: {error}"))


def compile_within_host_memory(spec: str, placement: "Placement", dtype) -> dict:
    """`vc.compile_train_step` in a child process that is stopped when it would
    take the host's last GiB of memory (a large unrolled step, ViT-H/14 without
    remat on 64 cores, needs over 20 GiB to compile): the plan records the
    placement as not compiled on this host, and goes on, where the kernel's
    OOM killer would otherwise end the whole search."""
    context = multiprocessing.get_context("spawn")  # No fork of a process running XLA.
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_compile_child, args=(spec, placement, dtype, send))
    child.start()
    send.close()
    limit = _host_memory_bytes("MemTotal") - HOST_MEMORY_RESERVE
    exceeded = {
        "fits": False,
        "host_memory_exceeded": True,
        "host_memory_gib": round(limit / 2**30, 1),
        "target": placement.target,
    }
    try:
        while not receive.poll(1.0):
            if not child.is_alive() and child.exitcode == -signal.SIGKILL:
                return exceeded  # The kernel's OOM killer came first.
            if not child.is_alive():
                raise RuntimeError(
                    f"the compile of {placement.key(spec, dtype)} ended without a report "
                    f"(exit code {child.exitcode}); run it alone to see its error."
                )
            if (
                _proc_bytes(f"/proc/{child.pid}/status", "VmRSS") or 0
            ) > limit or _host_memory_bytes("MemAvailable") < HOST_MEMORY_RESERVE // 4:
                child.kill()
                return exceeded
        kind, payload = receive.recv()
    finally:
        child.join()
    if kind == "error":
        raise RuntimeError(f"compiling {placement.key(spec, dtype)}: {payload}")
    return payload


class Cache:
    def __init__(self, reuse: bool):
        self.reuse = reuse
        # The code this process loaded: edits made while it runs do not change it.
        self.revision = code_revision(".")  # '+dirty': uncommitted code.
        self.data = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {}
        self.data.setdefault("compiles", {})

    def compile(self, spec: str, placement: Placement, dtype: str | None) -> dict:
        key = placement.key(spec, dtype)
        if self.reuse and key in self.data["compiles"]:
            return self.data["compiles"][key]
        print(f"  compiling {key} ...", flush=True)
        start = time.perf_counter()
        report = compile_within_host_memory(spec, placement, dtype)
        report["compiled_on"] = datetime.date.today().isoformat()
        report["revision"] = self.revision
        outcome = "fits" if report["fits"] else "does not fit"
        if report.get("host_memory_exceeded"):
            needed = report["host_memory_gib"]
            outcome = f"not compiled: the compiler needed over {needed} GiB of host memory"
        print(f"    {outcome} ({time.perf_counter() - start:.0f} s)", flush=True)
        self.data["compiles"][key] = report
        self.save_compiles()
        return report

    def save_compiles(self):
        RESULTS.mkdir(parents=True, exist_ok=True)
        JSON_PATH.write_text(json.dumps(self.data, indent=1, default=str) + "\n")

    def save(self, command: str, plan: list[dict]):
        self.data["command"] = command
        self.data["plan"] = plan
        self.save_compiles()

    def fitting(self, spec: str, platform_prefix: str) -> dict[str, dict]:
        """Every compiled placement of `spec` on targets named `platform_prefix`...
        that fits, by key."""
        return {
            key: report
            for key, report in self.data["compiles"].items()
            if key.startswith(f"{spec} | {platform_prefix}") and report["fits"]
        }


def can_remat(spec: str) -> bool:
    return "remat" in model_options(load_config(spec).model_name)  # Not the ResNets.


def smallest_fit(cache: Cache, spec: str, targets, dtype: str | None):
    """The first placement whose step fits, with its report; tries are
    recorded. None when nothing in `targets` fits."""
    tried = []
    for target in targets:
        for placement in candidates(target):
            if placement.remat != "none" and not can_remat(spec):
                continue
            report = cache.compile(spec, placement, dtype)
            tried.append(placement.key(spec, dtype))
            if report["fits"]:
                remat = placement.remat != "none"
                return {"target": target, "fsdp": placement.fsdp, "remat": remat,
                        "key": tried[-1], "tried": tried}  # fmt: skip
    return {"target": None, "tried": tried}


def accumulation_fit(cache: Cache, spec: str, target: str) -> dict:
    """Where nothing fits on `target` (the smallest slice), gradient accumulation
    there: FSDP over all its cores, full remat, and the fewest micro-batches
    (of the paper's global batch, so the same updates) that fit."""
    tried = []
    devices = get_target(target).num_devices
    batch = load_config(spec).batch_size
    for accum in ACCUM_STEPS:
        if batch % (accum * devices):
            break
        placement = Placement(target, devices, "full", accum)
        tried.append(placement.key(spec, None))
        if cache.compile(spec, placement, None)["fits"]:
            return {"target": target, "key": tried[-1], "tried": tried}
    return {"target": None, "tried": tried}


def lever_placements(cache: Cache, spec: str, smallest: dict) -> list[Placement]:
    """What may be cheaper than the smallest fit, pruned by memory
    monotonicity (a larger slice, or a lighter remat, never needs less):
    where the smallest fit needs remat, the lighter policies on it, Adam's
    bfloat16 first moment where the remat-free try missed by less than μ's
    saving, and remat-free placements on the next larger slices until one
    fits (larger slices without remat only add communication)."""
    report = cache.data["compiles"][smallest["key"]]
    if not smallest["remat"]:
        return []
    target, fsdp = smallest["target"], smallest["fsdp"]
    out = [Placement(target, fsdp, policy) for policy in ("dots_no_batch", "dots")]
    missed = cache.data["compiles"].get(Placement(target, fsdp).key(spec, None), {})
    # Against what the compiler said it had (TPU v3: 15.48 of 16 GiB), not the HBM size.
    needed = missed.get("memory", {})
    over = needed.get("required_bytes", 0) - needed.get("available_bytes", float("inf"))
    saving = report["memory"]["arguments_bytes"] / 3 / 2  # μ is a third of the state, halved.
    if 0 < over <= saving:
        out.append(Placement(target, fsdp, mu_dtype="bfloat16"))
    return out


def larger_without_remat(cache: Cache, spec: str, smallest: dict) -> None:
    """Remat-free data parallelism (then FSDP) on the slices above the smallest
    fit, up to the first that fits."""
    if not smallest["remat"]:
        return
    for target in TPU_SLICES[TPU_SLICES.index(smallest["target"]) + 1 :]:
        for placement in candidates(target)[:2]:
            if cache.compile(spec, placement, None)["fits"]:
                return


def study_placements(plan: list[dict], study_rows) -> list[tuple[Placement, str]]:
    """(the smallest placement as found, spec) of the rows named in `study_rows`."""
    out = []
    for entry in plan:
        row, tpu = entry["row"], entry.get("tpu") or {}
        if (row["model"], row["dataset"]) in study_rows and tpu.get("target"):
            remat = "full" if tpu["remat"] else "none"
            out.append((Placement(tpu["target"], tpu["fsdp"], remat), row["spec"]))
    return out


def core_days(report: dict) -> float | None:
    return report.get("device_days_bound")


def cheapest_and_fastest(cache: Cache, spec: str) -> tuple[str | None, str | None]:
    """Keys of the compiled TPU placements of `spec` with the fewest core-days,
    and the fewest days of wall time within FASTEST_BUDGET × those core-days."""
    priced = {
        k: r
        for k, r in cache.fitting(spec, "tpu-").items()
        # The config's numerics only; a scanned step's cost counts one block (XLA
        # costs the layer loop's body once), so it is compared, never priced.
        if core_days(r) and " dtype=config" in k and " scan=True" not in k
    }
    if not priced:
        return None, None
    cheapest = min(priced, key=lambda k: core_days(priced[k]))
    budget = FASTEST_BUDGET * core_days(priced[cheapest])
    within = {k: r for k, r in priced.items() if core_days(r) <= budget}
    fastest = min(within, key=lambda k: core_days(within[k]) / within[k]["num_devices"])
    return cheapest, fastest


def paper_core_days(row) -> str:
    days = [
        paper_results.table_2_core_days(row["model"], row["dataset"], e)
        for e in row.get("epochs", [])
    ]
    return ", ".join(f"{d / 1000:g}k" for d in days if d) or ""


def _gib(n) -> str:
    return f"{n / 2**30:.1f}"


def _epoch_days(report: dict, row: dict) -> list[float]:
    """Core-days per epoch variant of the row (the compile is of the first)."""
    days = core_days(report)
    epochs = row.get("epochs") or [None]
    return [days * (e / epochs[0] if e else 1) for e in epochs]


def describe(report: dict, row: dict) -> str:
    """One placement in a cell: slice, mesh, remat, accumulation, μ dtype,
    memory, cost-model step time, MFU bound, core-days and days of wall time."""
    cfg = report["config"]
    remat = "no remat"
    if cfg["model"].get("remat") == "True":
        remat = "remat " + cfg["model"].get("remat_policy", "full")
    parts = [report["target"].removeprefix("tpu-"),
             "×".join(str(v) for v in report["mesh"].values()), remat]  # fmt: skip
    if cfg.get("accum_steps", 1) > 1:
        parts.append(f"accum {cfg['accum_steps']}")
    if cfg.get("adam_mu_dtype", "float32") != "float32":
        parts.append("μ bf16")
    if cfg["model"].get("scan") == "True":
        parts.append("scan")
    parts.append(f"{_gib(report['memory']['total_bytes'])} GiB")
    if core_days(report):
        days = _epoch_days(report, row)
        parts += [
            f"{report['cost_model_step_seconds']:.2f} s",
            f"MFU≤{100 * report['mfu_bound']:.0f}%",
            " / ".join(f"{d:,.0f}" for d in days) + " core-d",
            " / ".join(f"{d / report['num_devices']:,.1f}" for d in days) + " d",
        ]
    return " · ".join(parts)


def markdown(cache: Cache, plan: list[dict], command: str) -> str:
    compiles = cache.data["compiles"]
    lines = [
        "# Pod plan: the smallest, cheapest and fastest TPU v3 placement of each paper run",
        "",
        f"Made by `{command}` on {datetime.date.today().isoformat()} "
        f"({platform.machine()} CPU host, jax {jax.__version__}, libtpu and the CUDA 12 "
        "plugin from requirements-compile.txt). Nothing here ran on a TPU or a GPU.",
        "",
        "Each placement reads: slice · mesh (data×fsdp) · remat (policy) · gradient "
        "accumulation · Adam μ dtype · memory · step · MFU bound · core-days · days of wall time.",
        "",
        "- **memory**: the compiler's buffer assignment per device (GiB) for the real "
        "training step (`vit_jax.step.build_trainer`, the config's global batch, donated state).",
        "- **step**: XLA's TPU cost model (`optimal_seconds`), a lower bound, not a "
        "measurement; **MFU≤** is the model-FLOPs utilisation it implies (an upper bound). "
        "XLA costs a loop's body once: with accumulation the step is multiplied by the "
        "loop's trip count, and every report's FLOPs are checked against 3 × forward × batch "
        "(`flops_check` in the JSON).",
        "- **core-d**: the config's total steps × step time × cores (one number per epoch "
        "variant); **d**: the same in days of wall time on that slice.",
        "- **smallest**: the first slice from v3-8 up where the step fits (data parallel, "
        "then FSDP, then FSDP + remat; where nothing fits on v3-8, gradient accumulation "
        "there: FSDP 8, remat, the fewest micro-batches of the paper's batch that fit). "
        "**cheapest**: the fewest core-days among every placement compiled for the row; "
        f"**fastest**: the fewest days of wall time within {FASTEST_BUDGET:g} × the "
        "cheapest's core-days. The search and its pruning: `experiments/pod_plan.py`.",
        "- **H100**: bf16 compute; XLA:GPU has no cost model offline, so GPU step times and "
        "MFU wait for a real GPU (experiments/bench/gpu.sh). fits = buffer assignment ≤ 79.1 GiB.",
        "",
        "| run | batch | smallest TPU v3 | cheapest | fastest | Table 2 core-days | H100s |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in plan:
        row = entry["row"]
        name = f"{row['kind']} {row['model']} {row['dataset']}"
        if row["kind"] == "pre-train":
            name += " " + "/".join(map(str, row["epochs"])) + " ep"
        else:
            name += " (Table 2 res.)" if row["table2"] else ""
        tpu, gpu = entry.get("tpu") or {}, entry.get("gpu") or {}
        accum = entry.get("tpu_accum") or {}
        smallest_key = accum.get("key") if accum.get("target") else tpu.get("key")
        smallest = compiles.get(smallest_key) if smallest_key else None
        cells = [name]
        cells.append(
            f"{smallest['config']['batch_size']} @{smallest['config']['image_size']}px"
            if smallest else ""
        )  # fmt: skip
        if smallest:
            cells.append(describe(smallest, row))
        else:
            cells.append("none up to " + TPU_SLICES[-1] if tpu else "(not compiled yet)")
        cheapest, fastest = cheapest_and_fastest(cache, row["spec"])
        cells += [describe(compiles[k], row) if k else "" for k in (cheapest, fastest)]
        cells.append(paper_core_days(row))
        greport = compiles.get(gpu["key"]) if gpu.get("target") else None
        if greport:
            cells.append(
                f"{gpu['target'].removeprefix('h100')} · "
                + "×".join(str(v) for v in greport["mesh"].values())
                + f" · {'remat' if gpu['remat'] else 'no remat'} · "
                f"{_gib(greport['memory']['total_bytes'])} GiB"
            )
        else:
            cells.append("none up to 64" if gpu else "(not compiled yet)")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *paper_checks(cache, plan), "", *scan_study(cache, plan), "",
              *mu_study(cache, plan), "", *mfu_bounds(cache, plan)]  # fmt: skip
    lines += [
        "",
        "Every try (also those that did not fit, with the compiler's RESOURCE_EXHAUSTED "
        "numbers) is in pod_plan.json under `compiles`.",
    ]
    not_compiled = [
        (key, report["host_memory_gib"])
        for key, report in cache.data["compiles"].items()
        if report.get("host_memory_exceeded")
    ]
    if not_compiled:
        lines += [
            "",
            "Not compiled on the planning host (the compiler's own memory, not the "
            "device's: it was stopped before the host ran out), so the search treated "
            "them as not fitting; delete their entries from the JSON to try again on a "
            "larger host:",
            "",
            *(f"- {key}: over {gib} GiB" for key, gib in not_compiled),
        ]
    return "\n".join(lines) + "\n"


def _entry(plan: list[dict], model: str, dataset: str) -> dict:
    return next(
        (e for e in plan if e["row"]["kind"] == "pre-train" and e["row"]["model"] == model
         and e["row"]["dataset"] == dataset), {},
    )  # fmt: skip


def flops_ratio(report: dict) -> float:
    """XLA's FLOPs ÷ the model's (3 × forward), also for reports older than the check."""
    if "xla_flops_per_device" not in report or not report.get("model_flops_per_device"):
        return float("nan")
    return report["xla_flops_per_device"] / report["model_flops_per_device"]


def paper_checks(cache: Cache, plan: list[dict]) -> list[str]:
    """The paper's hardware statements beside the plan's numbers."""
    compiles = cache.data["compiles"]
    lines = ["## The paper's hardware statements", ""]
    entry = _entry(plan, "ViT-L_16", "imagenet21k")
    accum = entry.get("tpu_accum") or {}
    if accum.get("target"):
        report = compiles[accum["key"]]
        days = _epoch_days(report, entry["row"])[-1] / report["num_devices"]
        lines.append(
            '- Sec. 4.2: ViT-L/16 pre-trained on ImageNet-21k "can be trained using a '
            'standard cloud TPUv3 with 8 cores in approximately 30 days". It fits 8 cores '
            f"with gradient accumulation: {describe(report, entry['row'])}. At 90 epochs "
            f"the cost model gives ≥ {days:.1f} days beside the paper's ~30 (a lower bound "
            "against a measurement)."
        )
    else:
        lines.append("- Sec. 4.2's ViT-L/16 ImageNet-21k on 8 TPU v3 cores: not compiled yet.")
    lines.append(
        "- Table 2's TPUv3-core-days (2.5k ViT-H/14 JFT, 0.68k ViT-L/16 JFT, 0.23k "
        "ViT-L/16 ImageNet-21k) name no epoch count. The plan maps them to 14, 14 and 90 "
        "epochs (experiments/paper_results.py): App. Table 6 gives ViT-H/14 only at 14 "
        "epochs (4262 exaFLOPs); at 14 and 90 epochs the three runs realise 32%, 43% and "
        "38% of the v3 cores' peak (App. Table 6's 3 × forward FLOPs ÷ (core-days × 61.5 "
        "TFLOP/s)), where 7 and 30 epochs would give ViT-L/16 22% and 13%."
    )
    jft = _entry(plan, "ViT-L_16", "jft").get("tpu") or {}
    i21k = entry.get("tpu") or {}
    if jft.get("key") in compiles and i21k.get("key") in compiles:
        a, b = compiles[jft["key"]], compiles[i21k["key"]]
        if core_days(a) and core_days(b):
            lines.append(
                f"- ViT-L/16's step on v3-32 costs {a['cost_model_step_seconds']:.2f} s on JFT "
                f"and {b['cost_model_step_seconds']:.2f} s on ImageNet-21k: the same model "
                "FLOPs (the heads, 18,291 and 21,843 classes, differ by 0.01%), but the "
                f"ImageNet-21k program needs {_gib(b['memory']['total_bytes'])} of 15.5 GiB "
                f"(JFT: {_gib(a['memory']['total_bytes'])}), and the compiler rematerialises "
                f"more to fit it: XLA counts {flops_ratio(b):.2f} × the model's FLOPs "
                f"against {flops_ratio(a):.2f} on JFT."
            )
    return lines


STUDY_VALUES = {"scan": (False, True), "mu_dtype": ("float32", "bfloat16")}


def scan_study_slices(placement: Placement) -> list[Placement]:
    """`placement` on its slice and the larger ones: the scanned step may need
    more memory than the unrolled one, and is compared where both fit."""
    larger = TPU_SLICES[TPU_SLICES.index(placement.target) :]
    return [dataclasses.replace(placement, target=target) for target in larger]


def study_variants(cache: Cache, plan: list[dict], study_rows, field: str):
    """(run name, placement text, value of `field`, report) for each compiled
    variant of the study rows' smallest placements, `field` over STUDY_VALUES."""
    for smallest, spec in study_placements(plan, study_rows):
        slices = scan_study_slices(smallest) if field == "scan" else [smallest]
        for placement in slices:
            for value in STUDY_VALUES[field]:
                key = dataclasses.replace(placement, **{field: value}).key(spec, None)
                if key in cache.data["compiles"]:
                    name = spec.split(":")[1].split(",epochs")[0]
                    where = f"{placement.target} fsdp {placement.fsdp} remat {placement.remat}"
                    yield name, where, value, cache.data["compiles"][key]


def scan_study(cache: Cache, plan: list[dict]) -> list[str]:
    """Unrolled against scanned blocks on the SCAN_STUDY rows."""
    lines = [
        "## Scanning over the encoder blocks (`scan=True`)",
        "",
        "| run | placement | blocks | compile s | memory GiB | step s (cost model) "
        "| XLA FLOPs / model FLOPs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, where, scanned, report in study_variants(cache, plan, SCAN_STUDY, "scan"):
        if report.get("host_memory_exceeded"):
            blocks = "scanned" if scanned else "unrolled"
            lines.append(
                f"| {name} | {where} | {blocks} | not compiled: over "
                f"{report['host_memory_gib']} GiB of host memory | | | |"
            )
            continue
        memory = report["memory"]
        fit = (
            _gib(memory["total_bytes"])
            if report["fits"]
            else f"does not fit: needs {_gib(memory.get('required_bytes', 0))}"
        )
        lines.append(
            f"| {name} | {where} | {'scanned' if scanned else 'unrolled'} "
            f"| {report['compile_seconds']:.0f} | {fit} "
            f"| {report.get('cost_model_step_seconds', float('nan')):.2f} "
            f"| {flops_ratio(report):.2f} |"
        )
    lines += [
        "",
        "Where the scanned step does not fit the row's smallest placement, both are "
        "compiled again on the next larger slices until both fit. Compile times are of "
        "single compiles on a 2-core x86-64 CPU shared with other work (the unrolled ones "
        "from earlier runs of this plan); one that does not fit stops at the buffer "
        "assignment and its time is not a compile time. A ratio far below 1 is XLA costing "
        "the layer loop's body once: the scanned step time is then not comparable.",
    ]
    return lines


def mu_study(cache: Cache, plan: list[dict]) -> list[str]:
    """Adam's first moment in float32 against bfloat16 on the MU_STUDY rows."""
    lines = [
        "## Adam's first moment in bfloat16 (`adam_mu_dtype`)",
        "",
        "| run | placement | μ dtype | state (arguments) GiB | memory GiB | step s (cost model) |",
        "|---|---|---|---|---|---|",
    ]
    for name, where, mu_dtype, report in study_variants(cache, plan, MU_STUDY, "mu_dtype"):
        if report["fits"]:
            lines.append(
                f"| {name} | {where} | {mu_dtype} | {_gib(report['memory']['arguments_bytes'])} "
                f"| {_gib(report['memory']['total_bytes'])} "
                f"| {report['cost_model_step_seconds']:.2f} |"
            )
    lines += [
        "",
        "μ is one of the three float32 copies of the parameters the state holds "
        "(weights, μ, ν); in bfloat16 it takes half: a saving of a sixth of the "
        "parameters' state per device, divided by the FSDP degree where the state is sharded.",
    ]
    return lines


MXU_TILE = 128  # TPU v3's matrix unit: 128×128 multiply-accumulate cells.
_DOT = re.compile(
    r"stablehlo\.dot_general .*?(?:batching_dims = \[([\d, ]*)\] x \[([\d, ]*)\], )?"
    r"contracting_dims = \[([\d, ]*)\] x \[([\d, ]*)\].*?"
    r": \(tensor<([\dx]+)x\w+>, tensor<([\dx]+)x\w+>\)"
)


def _dims(text: str) -> list[int]:
    return [int(d) for d in text.split(",") if d.strip()]


def mxu_tile_efficiency(stablehlo_text: str, tile: int = MXU_TILE) -> float:
    """The share of the MXU's work that is useful in the dots of a lowered
    program: each dot's FLOPs against the same with its contraction and one
    output side rounded up to `tile` (the side that wastes less; the other
    side streams through the array). Attention's dots contract over 64-wide
    heads or run over 197 (or 257) tokens and waste most of it."""
    useful = padded = 0.0
    for batch_l, batch_r, contract_l, contract_r, lhs, rhs in _DOT.findall(stablehlo_text):
        lhs_shape, rhs_shape = _dims(lhs.replace("x", ",")), _dims(rhs.replace("x", ","))
        batch = math.prod(lhs_shape[d] for d in _dims(batch_l))
        k = math.prod(lhs_shape[d] for d in _dims(contract_l))
        used_l, used_r = (
            set(_dims(batch_l) + _dims(contract_l)),
            set(_dims(batch_r) + _dims(contract_r)),
        )
        m = math.prod(n for d, n in enumerate(lhs_shape) if d not in used_l)
        n = math.prod(n for d, n in enumerate(rhs_shape) if d not in used_r)
        rounded_k = math.ceil(k / tile) * tile
        rounded = min(m * math.ceil(n / tile) * tile, n * math.ceil(m / tile) * tile)
        useful += batch * m * n * k
        padded += batch * rounded * rounded_k
    return useful / padded if padded else float("nan")


@functools.cache  # The table is re-rendered after every compile.
def model_mxu_tile_efficiency(model_name: str, image_size: int) -> float:
    """mxu_tile_efficiency of `model_name`'s forward pass on one image."""
    model = get_model(model_name, num_classes=1000)
    params = costs.abstract_params(model, image_size)
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
    return mxu_tile_efficiency(forward.lower(params, images).as_text())


# A TPU v3 chip's HBM moves 900 GB/s for its two cores (Jouppi et al., "A
# domain-specific supercomputer for training deep neural networks", CACM 2020).
V3_HBM_BYTES_PER_SECOND = 900e9 / 2
V3_RIDGE = 61.5e12 / V3_HBM_BYTES_PER_SECOND  # FLOP per byte where a core turns compute-bound.


def hbm_share(report: dict) -> float:
    """The step's bytes accessed at a v3 core's HBM bandwidth ÷ the cost model's step."""
    seconds = report["bytes_accessed_per_device"] / V3_HBM_BYTES_PER_SECOND
    return seconds / report["cost_model_step_seconds"]


def mfu_bounds(cache: Cache, plan: list[dict]) -> list[str]:
    """Each ViT pre-training row's cheapest placement: its MFU bound and what
    the compiled program says about it."""
    compiles = cache.data["compiles"]
    lines = [
        "## MFU bound of the ViT pre-training rows at their cheapest placement",
        "",
        "What the compiled program says about each row's bound, column by column:",
        "",
        "- recompute = XLA's FLOPs ÷ the model's (3 × forward): remat's or the compiler's "
        "own rematerialisation; HFU≤ = MFU≤ × recompute, the share of peak the cost model "
        "gives the work the program does.",
        "- MXU tiles: the share of the matrix unit's work that is useful in the forward "
        "pass's dots when each contraction and one output side is rounded up to the "
        "128-wide MXU (`mxu_tile_efficiency`, from the model's lowered program): what "
        "attention's 64-wide heads and 197 tokens cost on the MXU.",
        "- FLOP/B: XLA's FLOPs ÷ XLA's bytes accessed, the program's arithmetic intensity; "
        f"a v3 core turns compute-bound above {V3_RIDGE:.0f} (61.5 TFLOP/s ÷ "
        f"{V3_HBM_BYTES_PER_SECOND / 1e9:.0f} GB/s of HBM). HBM time: the bytes at that "
        "bandwidth as a share of the cost model's step; the step is close to the sum over "
        "the program's ops of the larger of their compute and memory times, so a share "
        "near half or above means memory traffic (layer norms, softmax, GELU, residual "
        "adds and the optimiser, in float32) bounds the step as much as the matrix unit does.",
        "- collectives: the bytes the step's collectives move (static count).",
        "- bf16 compute: the same placement compiled with bfloat16 activations (weights and "
        "Adam's state float32; `--dtype-study`), which changes the numerics and so is not a "
        "placement of the plan: the MFU bound it reaches, and its HBM time.",
        "",
        "| run | cheapest | MFU≤ | recompute | HFU≤ | MXU tiles | FLOP/B | HBM time "
        "| collective MiB | bf16 compute: MFU≤ (HBM time) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    tiles = {}
    for entry in plan:
        row = entry["row"]
        if row["kind"] != "pre-train" or not row["model"].startswith("ViT"):
            continue
        cheapest, _ = cheapest_and_fastest(cache, row["spec"])
        if not cheapest:
            continue
        report = compiles[cheapest]
        ratio = flops_ratio(report)
        if row["model"] not in tiles:
            image_size = report["config"]["image_size"]
            tiles[row["model"]] = model_mxu_tile_efficiency(row["model"], image_size)
        moved = sum(c["bytes"] for c in report["collectives"].values()) / 2**20
        bf16 = compiles.get(cheapest.replace(" dtype=config", " dtype=bfloat16"), {})
        bf16_cell = (
            f"{100 * bf16['mfu_bound']:.0f}% ({100 * hbm_share(bf16):.0f}%)"
            if bf16.get("fits") and bf16.get("mfu_bound")
            else ("does not fit" if bf16 else "")
        )
        intensity = report["xla_flops_per_device"] / report["bytes_accessed_per_device"]
        lines.append(
            f"| {row['model']} {row['dataset']} | {report['target'].removeprefix('tpu-')} "
            f"{'×'.join(str(v) for v in report['mesh'].values())} "
            f"| {100 * report['mfu_bound']:.0f}% | {ratio:.2f} "
            f"| {100 * report['mfu_bound'] * ratio:.0f}% | {100 * tiles[row['model']]:.0f}% "
            f"| {intensity:.0f} | {100 * hbm_share(report):.0f}% "
            f"| {moved:,.0f} | {bf16_cell} |"
        )
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.pod_plan", description=__doc__)
    parser.add_argument("--reuse", action="store_true", help="take compiles from the JSON")
    parser.add_argument("--only", help="only rows of this model (ViT-H_14)")
    parser.add_argument("--dataset", help="only rows of this dataset")
    parser.add_argument("--kind", choices=("pre-train", "fine-tune"), help="only these rows")
    parser.add_argument("--no-gpu", action="store_true", help="skip the H100 search")
    parser.add_argument("--no-tpu", action="store_true", help="skip the TPU v3 search")
    parser.add_argument(
        "--no-levers", action="store_true",
        help="only the smallest fit: no accumulation, remat policies, bf16 μ or larger slices",
    )  # fmt: skip
    parser.add_argument(
        "--scan-study", action="store_true",
        help=f"compile the smallest placement of {SCAN_STUDY} with the blocks scanned",
    )  # fmt: skip
    parser.add_argument(
        "--mu-study", action="store_true",
        help=f"compile the smallest placement of {MU_STUDY} with Adam's μ in bfloat16",
    )  # fmt: skip
    parser.add_argument(
        "--dtype-study", action="store_true",
        help=f"compile the cheapest placement of {DTYPE_STUDY} with bfloat16 compute",
    )  # fmt: skip
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
        if (not args.only or args.only == r["model"]) and (not args.kind or r["kind"] == args.kind)
        and (not args.dataset or r["dataset"] == args.dataset)
    ]  # fmt: skip
    for row in rows():
        entry = previous.get(row["spec"], {"row": row})
        entry["row"] = row
        plan.append(entry)

    def save():
        cache.save(command, plan)
        MD_PATH.write_text(markdown(cache, plan, command))

    for index, row in enumerate(selected, 1):
        entry = next(e for e in plan if e["row"]["spec"] == row["spec"])
        spec = row["spec"]
        print(f"[{index}/{len(selected)}] {spec}", flush=True)
        if not args.no_tpu:
            slices = TPU_SLICES[TPU_SLICES.index(args.start_tpu) :]
            entry["tpu"] = smallest = smallest_fit(cache, spec, slices, None)
            save()
            if not args.no_levers and smallest["target"] and can_remat(spec):
                if smallest["target"] != TPU_SLICES[0]:
                    entry["tpu_accum"] = accumulation_fit(cache, spec, TPU_SLICES[0])
                    save()
                for placement in lever_placements(cache, spec, smallest):
                    cache.compile(spec, placement, None)
                    save()
                larger_without_remat(cache, spec, smallest)
                save()
        if not args.no_gpu:
            counts = GPU_COUNTS[GPU_COUNTS.index(args.start_gpu) :]
            entry["gpu"] = smallest_fit(cache, spec, counts, "bfloat16")
            save()
    if args.scan_study:
        for placement, spec in study_placements(plan, SCAN_STUDY):
            for at in scan_study_slices(placement):
                unrolled = cache.compile(spec, at, None)
                scanned = cache.compile(spec, dataclasses.replace(at, scan=True), None)
                save()
                if scanned["fits"] and unrolled["fits"]:
                    break
    if args.mu_study:
        for placement, spec in study_placements(plan, MU_STUDY):
            cache.compile(spec, dataclasses.replace(placement, mu_dtype="bfloat16"), None)
            save()
    if args.dtype_study:
        for entry in plan:
            row = entry["row"]
            cheapest, _ = cheapest_and_fastest(cache, row["spec"])
            if row["kind"] == "pre-train" and (row["model"], row["dataset"]) in DTYPE_STUDY:
                if cheapest:
                    placement = Placement.of(cache.data["compiles"][cheapest])
                    cache.compile(row["spec"], placement, "bfloat16")
                    save()
    save()
    print(f"Wrote {MD_PATH} and {JSON_PATH}.")


if __name__ == "__main__":
    main(sys.argv[1:])
