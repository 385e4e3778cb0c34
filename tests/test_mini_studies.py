"""Smoke test of the one-machine studies: every study's command at toy size
(the smallest model of each family, 2 steps, synthetic Fashion-MNIST-format
IDX files read through the real loader), so the scripts cannot rot. The
numbers are meaningless; the test checks that each study runs end to end and
writes its JSON (with the provenance), markdown table and PNG plots."""

import json
import os
import time

import jax
import pytest

from experiments.mini import STUDIES
from experiments.mini.__main__ import main
from experiments.mini.toy_data import write_toy_fashion_mnist


@pytest.fixture(scope="module")
def toy_dirs(tmp_path_factory):
    """Work, results and data folders shared by the studies, and a persistent
    compilation cache: the toy models of different studies compile to the same
    programs, and XLA compilation is most of a toy run's time."""
    root = tmp_path_factory.mktemp("mini")
    data_dir = write_toy_fashion_mnist(str(root / "fashion"), per_class=12)  # 10-shot probes.
    saved = {
        name: getattr(jax.config, name)
        for name in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    }
    jax.config.update("jax_compilation_cache_dir", str(root / "xla-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield str(root / "work"), str(root / "results"), data_dir
    for name, value in saved.items():
        jax.config.update(name, value)


@pytest.mark.parametrize("study", STUDIES)
def test_study_runs_at_toy_size(study, toy_dirs):
    work_dir, out_dir, data_dir = toy_dirs
    argv = [study, "--toy", f"--workdir={work_dir}", f"--out={out_dir}", f"--data_dir={data_dir}"]
    paths = main(argv)

    with open(os.path.join(out_dir, f"{study}.json")) as f:
        result = json.load(f)
    assert result["toy"] is True
    assert result["seeds"] == [0]
    assert result["command"].startswith(f"python -m experiments.mini {study} --toy")
    assert len(result["git_revision"]) >= 40
    # The progress line's "run k of N": the study ran as many runs as it planned.
    assert result["runs"]["done"] == result["runs"]["planned"] > 0
    # Its runs' own training time, read from their event files, is recorded.
    assert result["training_seconds"] > 0
    assert result["hardware"]["cores"] >= 1 and result["hardware"]["cpu"]
    assert result["finished"].startswith(time.strftime("%Y-"))  # The date it was made.
    assert result["records"] and result["summary"]
    markdown = open(os.path.join(out_dir, f"{study}.md")).read()
    assert markdown.count("\n|") >= 2  # Header, rule, at least one row.
    plots = [p for p in paths if p.endswith(".png")]
    assert plots and all(os.path.getsize(p) > 1000 for p in plots)


def test_seeds_must_be_integers(toy_dirs):
    work_dir, out_dir, data_dir = toy_dirs
    with pytest.raises(SystemExit, match="integers separated by commas"):
        main(["posemb", "--toy", "--seeds=zero", f"--workdir={work_dir}", f"--data_dir={data_dir}"])


def test_rates_of_the_study_models(toy_dirs, tmp_path):
    from experiments.mini import rates

    data_dir = toy_dirs[2]
    labels = list(rates.study_models())
    assert labels[0] == "ViT-64x6/4"  # The studies' ViT: the config's architecture at width 64.
    assert {"ViT", "BiT", "hybrid"} == {m.family for m in rates.study_models().values()}
    out = tmp_path / "rates.json"
    rates.main(["--toy", "--only=BiT-R1-1-1", "--steps=2",
                f"--data_dir={data_dir}", f"--out={out}"])  # fmt: skip
    record = json.loads(out.read_text())
    assert list(record["rates"]) == ["BiT-R1-1-1x0.5"] and record["rates"]["BiT-R1-1-1x0.5"] > 0
    assert len(record["revision"].removesuffix("+dirty")) == 40
    assert record["hardware"]["cores"] >= 1


def test_training_time_adds_up_every_invocation_of_a_run(tmp_path):
    """A run trained over two invocations (interrupted, then resumed) has two
    events files; its training time is the sum of their spans, so a study
    resumed over several invocations does not undercount its cost."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from experiments.mini.runs import training_seconds

    for invocation, offsets in enumerate(((60.0, 300.0), (90.0,))):
        # The writer's first event (the file version) is stamped now.
        start = time.time()
        writer = EventFileWriter(str(tmp_path), filename_suffix=f".{invocation}")
        for step, offset in enumerate(offsets):
            writer.add_event(Event(wall_time=start + offset, step=step))
        writer.close()
    assert training_seconds(str(tmp_path)) == pytest.approx(300.0 + 90.0, abs=1.0)
    assert training_seconds(str(tmp_path / "no-run")) == 0.0


def test_resolution_convergence_is_the_gain_over_the_last_quarter(tmp_path):
    """A 470-step fine-tuning evaluated every 117 steps logs at 468 and again
    at 470: its last-quarter gain is the final accuracy less the one at 351,
    not the zero between the two last evaluations."""
    import types

    import tensorflow as tf

    from experiments.mini.resolution import last_quarter_gain
    from experiments.mini.runs import logged_scalars

    curve = {117: 0.83, 234: 0.867, 351: 0.8753, 468: 0.887, 470: 0.887}
    with tf.summary.create_file_writer(str(tmp_path)).as_default():
        for step, value in curve.items():
            tf.summary.scalar("test/accuracy", value, step=step)
    # What a run's record keeps of its events (runs.train).
    scalars = {tag: sorted(c.items()) for tag, c in logged_scalars(str(tmp_path)).items()}
    gain = last_quarter_gain(types.SimpleNamespace(record={"scalars": scalars}))
    assert gain == pytest.approx(0.887 - 0.8753, abs=1e-6)
    assert last_quarter_gain(types.SimpleNamespace(record={})) == 0.0


def test_a_run_interrupted_by_a_signal_stops_the_study(toy_dirs, monkeypatch):
    """The trainer returns early on SIGTERM with its checkpoint saved; the
    study must stop there, not score the half-trained model."""
    import vit_jax.train
    from experiments.mini import runs
    from experiments.mini.models import baseline

    work_dir, out_dir, data_dir = toy_dirs
    setting = runs.Setting(
        toy=True,
        seeds=(0,),
        out_dir=out_dir,
        work_dir=os.path.join(work_dir, "interrupted"),
        data_dir=data_dir,
    )
    config = runs.pretrain_config(setting, baseline(), seed=0)
    config.total_steps = 4

    def preempted_after_two_steps(config, workdir):
        config = config.copy_and_resolve_references()
        config.total_steps = 2  # What a SIGTERM at step 2 leaves on disk.
        return vit_jax.train.train_and_evaluate(config, workdir)

    monkeypatch.setattr(runs, "train_and_evaluate", preempted_after_two_steps)
    with pytest.raises(SystemExit, match="stopped at step 2 of 4 .*run the same command again"):
        runs.train(setting, config, "interrupted")


def test_a_study_carries_on_from_its_records_without_the_work_directories(
    toy_dirs, tmp_path, monkeypatch, capsys
):
    """A fresh checkout has the committed records but no workdirs/: recorded
    runs are not trained again and give their recorded numbers; a run that is
    not recorded and fine-tunes from a recorded one trains that one again
    first, and its numbers equal those of an uninterrupted sitting."""
    import shutil

    import vit_jax.train
    from experiments.mini import runs
    from experiments.mini.models import baseline

    work_dir = tmp_path / "work"

    def sitting(fresh_checkout=True):
        if fresh_checkout:
            shutil.rmtree(work_dir, ignore_errors=True)
        setting = runs.Setting(
            toy=True,
            seeds=(0,),
            out_dir=str(tmp_path / "results"),
            work_dir=str(work_dir),
            data_dir=toy_dirs[2],
            progress=runs.Progress(planned=2),
        )
        source = runs.train(setting, runs.pretrain_config(setting, baseline(), seed=0), "source")
        config = runs.finetune_config(
            setting, baseline(), pretrained=source.npz, dataset=runs.UPSTREAM, seed=0,
            steps=2, image_size=28,
        )  # fmt: skip
        tuned = runs.train(setting, config, "tuned")
        numbers = {
            "source_probe": runs.fewshot_accuracy(setting, source, runs.TARGET),
            "tuned_accuracy": runs.accuracy(tuned),
            "tuned_loss": runs.curves(tuned)["train/loss"],
        }
        return setting, numbers, tuned

    first, numbers, tuned = sitting()
    assert first.progress.reused == 0 and len(first.progress.training_seconds) == 2
    assert sorted(os.listdir(first.records_dir)) == sorted(
        f"{run.key}.json" for run in first.runs.values()
    )
    assert numbers["tuned_loss"] and 0 <= numbers["tuned_accuracy"] <= 1

    trainings = []
    original = vit_jax.train.train_and_evaluate

    def counted(config, workdir):
        trainings.append(workdir)
        return original(config, workdir)

    monkeypatch.setattr(runs, "train_and_evaluate", counted)
    second, again, _ = sitting()
    assert again == numbers and trainings == []
    assert second.progress.reused == 2

    # The fine-tuning's record is lost: it trains again, from the source's
    # export, which has to be made again first.
    os.remove(os.path.join(first.records_dir, f"{tuned.key}.json"))
    capsys.readouterr()
    third, once_more, _ = sitting()
    assert trainings == list(third.runs)  # The source, then the fine-tuning.
    assert once_more == numbers
    assert "[mini] source: training again for its parameters" in capsys.readouterr().out

    # The same with the work directories kept: the source's final checkpoint
    # restores, so nothing says it is trained again.
    os.remove(os.path.join(first.records_dir, f"{tuned.key}.json"))
    os.remove(source_npz := third.runs[next(iter(third.runs))].npz)
    sitting(fresh_checkout=False)
    assert "training again" not in capsys.readouterr().out
    assert os.path.exists(source_npz)
