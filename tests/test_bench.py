"""experiments.bench.bench at a tiny size: it runs, prints and records every field.
Nothing here is timed against a threshold; the real numbers are in
docs/performance.md."""

import importlib.util
import json
import pathlib
import subprocess
import sys
import types

import pytest

from experiments.bench import bench
from vit_jax.models import costs, get_model

TINY = ["--model=testing", "--resolution=16", "--rounds=1", "--iters=1", "--matmul_sizes=64"]


def run_bench(tmp_path, *flags):
    results = tmp_path / "results.jsonl"
    records = bench.main([*TINY, f"--results={results}", *flags])
    return records, [json.loads(line) for line in results.read_text().splitlines()]


def test_forward_and_train_print_and_record_every_field(tmp_path, capsys):
    records, lines = run_bench(tmp_path, "--batch=8", "--mode=forward,train")
    testing_vit = get_model("testing", num_classes=1000)  # The benchmark's default head.
    printed = capsys.readouterr().out
    assert [r["mode"] for r in lines] == ["forward", "train"]
    assert lines == json.loads(json.dumps(records))  # What is printed is what is stored.
    for record in records:
        assert record["images_per_s"] > 0 and record["step_s"] > 0
        assert record["compile_s"] > 0
        assert record["memory_bytes_per_device"] > 0
        assert 0 < record["mfu"] and record["achieved_tflops"] > 0
        assert len(record["peak_tflops_rounds"]) == 1  # Re-measured in each timed round.
        assert record["matmul_gflops"]["peak"] >= record["matmul_gflops"]["jax"] > 0
        # The best of the squares and the model's MLP matmul (8 images × 17 tokens).
        assert record["matmul_shape"] in ([64, 64, 64], [8 * 17, 16, 32])
        assert record["params"] == costs.count_params(costs.abstract_params(testing_vit, 16))
        assert record["load_avg_1m"] >= 0
        assert record["cpu_model"] and len(record["commit"]) >= 7  # Results name both.
    forward, train = records
    # A train step is forward + backward (+ optimizer): at least 3× the model FLOPs.
    assert train["model_flops_per_step"] == pytest.approx(3 * forward["model_flops_per_step"])
    assert train["xla_flops_per_step"] > 2.5 * forward["xla_flops_per_step"]
    for field in ("img/s", "ms/step", "GFLOP/s (XLA count)", "MFU", "compile", "memory/device"):
        assert printed.count(field) >= 2, field
    assert "Appended 2 record(s)" in printed


def test_bfloat16_forward_runs(tmp_path):
    (record,), _ = run_bench(tmp_path, "--batch=8", "--mode=forward", "--dtype=bfloat16")
    assert record["dtype"] == "bfloat16" and record["images_per_s"] > 0
    assert record["attention"] == "auto" and record["attention_resolved"].startswith("XLA's")


def test_attention_reaches_the_train_step(tmp_path, capsys):
    (record,), _ = run_bench(tmp_path, "--batch=8", "--mode=train", "--attention=xla")
    assert record["attention"] == "xla" and record["images_per_s"] > 0
    assert "attention xla (XLA's attention (asked for))" in capsys.readouterr().out


def test_compare_timm_or_names_the_install_target(tmp_path, capsys):
    """timm is no project dependency: with it the ratio is recorded, without it
    the error names the make target that installs it."""
    flags = ("--batch=8", "--mode=forward", "--compare=timm")
    if importlib.util.find_spec("timm") is None:
        with pytest.raises(SystemExit, match="make bench-deps"):
            run_bench(tmp_path, *flags)
        return
    (record,), _ = run_bench(tmp_path, *flags)
    assert record["timm_images_per_s"] > 0 and record["ratio_vs_timm"] > 0
    assert record["ratio_vs_timm_rounds"] == [record["ratio_vs_timm"]]  # One round.
    assert record["matmul_gflops"]["torch"] > 0
    assert "ours/timm" in capsys.readouterr().out


def test_fsdp_divides_the_state_over_devices(tmp_path):
    """Compile-only memory analysis on the 8 simulated devices: FSDP keeps about
    an eighth of the parameters and optimizer state on each device."""
    flags = ("--batch=8", "--mode=train", "--compile_only")
    (replicated,), _ = run_bench(tmp_path, *flags, "--mesh=data:8,fsdp:1")
    (sharded,), _ = run_bench(tmp_path, *flags, "--mesh=data:1,fsdp:8", "--remat")
    assert "images_per_s" not in sharded  # Compile-only: nothing ran.
    assert sharded["remat"]  # The remat path compiles under FSDP too.
    arguments = [r["memory_breakdown"]["arguments_bytes"] for r in (sharded, replicated)]
    ratio = arguments[0] / arguments[1]
    assert ratio < 0.25  # 1/8 plus the leaves no axis of which divides by 8.


def test_mesh_and_spec_peaks_parse():
    assert bench.parse_mesh("data:-1,fsdp:8") == [("data", -1), ("fsdp", 8)]
    with pytest.raises(SystemExit, match="name:size"):
        bench.parse_mesh("fsdp=8")
    h100 = types.SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3")
    assert bench.spec_peak(h100, "bfloat16") == 989e12
    assert bench.spec_peak(types.SimpleNamespace(device_kind="TPU v5 lite"), "bfloat16") == 197e12
    assert bench.spec_peak(types.SimpleNamespace(device_kind="Some new chip"), "float32") is None


def test_the_peak_includes_each_vits_own_mlp_matmul():
    settings = [
        bench.Setting(model, 8, 224, "train", "float32")
        for model in ("ViT-B_16", "R50+ViT-B_16", "BiT-R50x1", "ViT-H_14")
    ]
    # ViT-B/16 and its hybrid share (8 · 197 tokens, 768, 3072); the ResNet
    # adds none; ViT-H/14 has 257 tokens of 1280, MLP 5120.
    assert bench.peak_shapes([1024], settings) == [
        (1024, 1024, 1024),
        (8 * 197, 768, 3072),
        (8 * 257, 1280, 5120),
    ]


def test_bad_settings_fail_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit, match="choose from forward, train"):
        run_bench(tmp_path, "--batch=8", "--mode=backward")
    with pytest.raises(SystemExit, match="choose from float32, bfloat16"):
        run_bench(tmp_path, "--batch=8", "--dtype=float16")
    with pytest.raises(SystemExit):  # A user error: one message, exit status 1.
        run_bench(tmp_path, "--batch=6")
    assert "not divisible by the 8 data-parallel devices" in capsys.readouterr().err


# The accelerator images the benchmark runs on (see experiments/bench/gpu.sh)
# have JAX, Flax, optax and orbax but no TensorFlow, clu or tfds.
_WITHOUT_TENSORFLOW = """
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"tensorflow", "tensorflow_datasets", "clu"}:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
sys.meta_path.insert(0, Missing())
from experiments.bench import bench
bench.main(sys.argv[1:])
"""


def test_train_step_benchmark_needs_no_tensorflow(tmp_path):
    results = tmp_path / "results.jsonl"
    flags = [*TINY, "--batch=8", "--mode=train", f"--results={results}"]
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, *flags], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert record["mode"] == "train" and record["images_per_s"] > 0


def test_compare_official_times_it_beside_ours_and_the_plot_draws_it(tmp_path, capsys):
    (forward, train), _ = run_bench(
        tmp_path, "--batch=8", "--mode=forward,train", "--compare=official"
    )
    for record in (forward, train):
        assert record["official_images_per_s"] > 0 and record["ratio_vs_official"] > 0
        assert len(record["ratio_vs_official_rounds"]) == 1  # One round.
    assert capsys.readouterr().out.count("ours/official") == 2
    script = pathlib.Path(__file__).parents[1] / "experiments" / "bench" / "plot.py"
    spec = importlib.util.spec_from_file_location("plot", script)
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    out = tmp_path / "bench.png"
    plot.main([f"--results={tmp_path / 'results.jsonl'}", f"--out={out}"])
    assert out.stat().st_size > 10_000  # A drawn figure, not an empty file.
    assert "(2 configurations)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.parse_args(["--compare=timm,pytorch"])
    assert bench.parse_args(["--compare=none"]).compare == []
