"""`python -m experiments.paper`: the matrix, App. Table 6's exaFLOPs measured on
the models, the printed commands and a shrunk local run."""

import json
import shlex

import pytest

from experiments import estimate, matrix, paper, paper_results


def test_list_names_every_experiment(capsys):
    paper.main(["list"])
    listed = capsys.readouterr().out
    for name in ("table3", "scaling", "table2", "table4", "data_size", "posemb", "classifier"):
        assert name in listed
    assert "mpp" in listed


def test_matrix_covers_the_paper_tables():
    experiments = matrix.experiments()
    scaling = {run.name for run in experiments["scaling"].runs}
    cells = [(m, e) for m, by_epochs in paper_results.APP_TABLE_6.items() for e in by_epochs]
    assert len(cells) == 18
    for model, epochs in cells:
        assert {f"{model}-jft-{epochs}ep", f"{model}-jft-{epochs}ep-imagenet"} <= scaling
    table2 = experiments["table2"].runs
    assert sum("-vtab-" in run.name for run in table2) == 3 * 19
    published = {run.arg: dict(run.published) for run in experiments["posemb"].runs}
    assert published["posemb=none"]["5-shot linear ImageNet"] == 0.61382
    for experiment in experiments.values():  # Names are work directories: unique.
        assert len({run.name for run in experiment.runs}) == len(experiment.runs)


VIT_TABLE_6_RUNS = [
    run
    for run in matrix.experiments()["scaling"].runs
    if run.name.startswith("ViT-") and not run.name.endswith("imagenet")
]


@pytest.mark.parametrize("run", VIT_TABLE_6_RUNS, ids=lambda run: run.name)
def test_plan_reproduces_app_table_6_exaflops(run):
    published = dict(run.published)["exaFLOPs"]
    cost = estimate.run_cost(run.load_config())
    assert cost.train_exaflops == pytest.approx(published, rel=0.05)


def test_plan_prints_costs_and_the_published_number(capsys):
    paper.main(["plan", "posemb", "--tiny", "--only", "relative", "--set", "total_steps=10"])
    out = capsys.readouterr().out
    assert "[1/1] ViT-B_16-posemb-relative" in out
    assert "configs/posemb_ablation.py:posemb=relative" in out
    assert "model_name=testing" in out and "total_steps=10" in out
    assert "10 steps: 80 images" in out  # --set wins over --tiny's 2 steps.
    assert "5-shot linear ImageNet 0.64032" in out
    assert "core-days: TPUv3-core-days at 19.7 TFLOP/s per core" in out


def test_plan_puts_core_days_beside_table_2s(capsys):
    # Table 2's last row: ViT-L/16 on ImageNet-21k, 0.23k TPUv3-core-days.
    paper.main(["plan", "table2", "--only", "ViT-L_16-imagenet21k-90ep-cifar10"])
    assert "measured" not in capsys.readouterr().out  # No benchmark of ViT-L_16 at 384 px.
    run = next(
        r for r in matrix.experiments()["table2"].runs if r.name == "ViT-L_16-imagenet21k-90ep"
    )
    cost = estimate.run_cost(run.load_config())
    line = paper.format_plan_entry(1, 1, run, run.load_config(), (), cost).splitlines()[-1]
    percent = round(100 * cost.tpu_core_days / 230)
    assert line == (
        f"  core-days  {cost.tpu_core_days:,.0f} TPUv3-core-days (Table 2: 230 "
        f"TPUv3-core-days; the estimate is {percent}% of it)"
    )
    assert 80 < percent < 150  # ViT-L/16's exaFLOPs at ViT-H/14's rate.


def test_device_time_comes_from_a_benchmark_when_there_is_one(tmp_path):
    run = matrix.experiments()["posemb"].runs[0]
    config = run.load_config()
    from experiments import overrides

    config = overrides.apply_overrides(config, overrides.tiny_overrides(config))
    bench = tmp_path / "results.jsonl"
    record = dict(mode="train", model="testing", resolution=16, images_per_s=4.0)
    bench.write_text(json.dumps({**record, "num_devices": 2, "device_kind": "TPU v9"}) + "\n")
    cost = estimate.run_cost(config, bench_file=str(bench))
    assert cost.measured_days == pytest.approx(16 / 4.0 * 2 / 86400)  # 2 steps of 8 images.
    assert cost.measured_unit.startswith("TPU v9-days (2 device(s) at 4 images/s")
    text = paper.format_plan_entry(1, 1, run, config, (), cost)
    assert text.splitlines()[-1].startswith("  measured   9.26e-05 TPU v9-days")
    assert "TPUv3-core-days" in text.splitlines()[-2]  # Table 2's unit stays beside it.


def test_print_command_is_the_main_command_line(capsys):
    paper.main(["run", "classifier", "--only", "gap-lr0.0003", "--tiny", "--set", "seed=3"])
    words = shlex.split(capsys.readouterr().out.strip())
    assert words[:3] == ["python", "-m", "vit_jax.main"]
    assert "--config=configs/classifier_ablation.py:classifier=gap,lr=0.0003" in words
    assert "--workdir=workdirs/paper/classifier/ViT-B_16-gap-lr0.0003" in words
    assert "--config.model_name=testing" in words and words[-1] == "--config.seed=3"


def test_unknown_names_and_fields_are_errors(capsys):
    with pytest.raises(SystemExit, match="Unknown experiment 'tabel3'"):
        paper.main(["plan", "tabel3"])
    with pytest.raises(SystemExit, match="No run of 'posemb'"):
        paper.main(["plan", "posemb", "--only", "nothing-like-this"])
    with pytest.raises(SystemExit):  # A user error: one message, exit status 1.
        paper.main(["plan", "posemb", "--tiny", "--set", "totl_steps=3"])
    assert "no field 'totl_steps'" in capsys.readouterr().err


def test_run_local_trains_a_shrunk_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # Work directories are relative to the current one.
    paper.main(["run", "posemb", "--local", "--tiny", "--only", "learn_2d"])
    assert "ViT-B_16-posemb-learn_2d done" in capsys.readouterr().out
    workdir = tmp_path / "workdirs/paper/posemb/ViT-B_16-posemb-learn_2d"
    assert (workdir / "checkpoints").is_dir()
