"""Provenance of the studies' results (python -m experiments.mini check): in a
git repository made here, a study JSON from a clean commit passes; one from a
dirty tree, one whose code changed after, or one that is missing fails with
the reason; and the README sections must be what the JSON gives."""

import json
import os
import subprocess

import pytest

from experiments.mini import provenance, readme


def git(root, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def write(root, path, text):
    os.makedirs(os.path.dirname(os.path.join(root, path)) or root, exist_ok=True)
    with open(os.path.join(root, path), "w") as f:
        f.write(text)


@pytest.fixture
def repo(tmp_path):
    root = str(tmp_path)
    git(root, "init", "-q")
    write(root, "vit_jax/model.py", "WIDTH = 64\n")
    write(root, "experiments/mini/study.py", "STEPS = 10\n")
    for file, name in readme.SECTIONS.items():
        write(root, file, f"# Title\n\n{readme.BEGIN.format(name)}\n{readme.END.format(name)}\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "code")
    return root


def study_json(root, revision, **extra):
    result = dict(
        dict(
            study="posemb",
            title="Position embeddings",
            git_revision=revision,
            toy=False,
            seeds=[0, 1, 2],
            command="python -m experiments.mini posemb",
            wall_seconds=60.0,
            cost_estimate="1 CPU-hour",
            claim=dict(quote="q", source="App. D.4", comparison="c", rule="r"),
            verdict=dict(verdict="holds", findings=["1-D − none: +3.00 points"], estimates={}),
            table="| a |\n|---|\n| 1 |",
            notes="",
            summary=[],
            records=[],
        ),
        **extra,
    )
    write(root, "experiments/results/posemb.json", json.dumps(result))
    return os.path.join(root, "experiments/results/posemb.json")


def test_a_result_from_a_clean_commit_of_todays_code_passes(repo):
    path = study_json(repo, provenance.code_revision(repo))
    status = provenance.check_study(repo, "posemb", path)
    assert status.ok, status.line
    # Results and markdown written after the run are not code.
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "results")
    write(repo, "experiments/README.md", "# rewritten\n")
    git(repo, "commit", "-q", "-am", "text")
    assert provenance.check_study(repo, "posemb", path).ok


def test_a_result_from_a_dirty_tree_fails(repo):
    write(repo, "experiments/mini/study.py", "STEPS = 20\n")
    revision = provenance.code_revision(repo)
    assert revision.endswith("+dirty")
    status = provenance.check_study(repo, "posemb", study_json(repo, revision))
    assert not status.ok and "dirty" in status.line


def test_an_untracked_code_file_makes_the_tree_dirty(repo):
    write(repo, "vit_jax/new_layer.py", "X = 1\n")
    assert provenance.code_revision(repo).endswith("+dirty")


def test_a_result_whose_code_changed_after_fails_naming_the_files(repo):
    path = study_json(repo, provenance.code_revision(repo))
    write(repo, "vit_jax/model.py", "WIDTH = 128\n")
    git(repo, "commit", "-q", "-am", "wider")
    status = provenance.check_study(repo, "posemb", path)
    assert not status.ok
    assert "stale" in status.line and "vit_jax/model.py" in status.line


def test_the_code_fingerprint_that_names_cached_runs_follows_the_code_only(repo):
    """Studies cache training runs under this fingerprint: a change to the
    code, committed or not, or a new code file changes it; results and
    markdown do not, and committing an unchanged tree does not."""
    first = provenance.code_fingerprint(repo)
    study_json(repo, provenance.code_revision(repo))
    write(repo, "experiments/README.md", "# rewritten\n")
    assert provenance.code_fingerprint(repo) == first
    write(repo, "vit_jax/model.py", "WIDTH = 128\n")
    edited = provenance.code_fingerprint(repo)
    assert edited != first
    git(repo, "commit", "-q", "-am", "wider")
    assert provenance.code_fingerprint(repo) == edited
    write(repo, "vit_jax/new_layer.py", "X = 1\n")
    with_new_file = provenance.code_fingerprint(repo)
    assert with_new_file != edited
    write(repo, "vit_jax/new_layer.py", "X = 2\n")
    assert provenance.code_fingerprint(repo) != with_new_file


def test_a_missing_unknown_or_toy_result_fails(repo):
    missing = provenance.check_study(repo, "posemb", os.path.join(repo, "nothing.json"))
    assert not missing.ok and "missing" in missing.line
    unknown = provenance.check_study(repo, "posemb", study_json(repo, "0" * 40))
    assert not unknown.ok and "does not exist" in unknown.line
    toy = provenance.check_study(
        repo, "posemb", study_json(repo, provenance.code_revision(repo), toy=True)
    )
    assert not toy.ok and "toy" in toy.line


def test_the_readme_sections_must_be_what_the_json_gives(repo):
    study_json(repo, provenance.code_revision(repo))
    results = os.path.join(repo, "experiments/results")
    assert set(readme.drifted(repo, results)) == set(readme.SECTIONS)
    readme.rewrite(repo, results)
    assert readme.drifted(repo, results) == []
    text = open(os.path.join(repo, "experiments/README.md")).read()
    assert "**Verdict: holds**" in text and "+3.00 points" in text
    assert (
        "| 3 [posemb](experiments/results/posemb.md) | App. D.4: “q” | holds |"
        in open(os.path.join(repo, "README.md")).read()
    )
    # A verdict edited by hand is drift.
    write(repo, "experiments/README.md", text.replace("**Verdict: holds**", "**Verdict: partly**"))
    assert readme.drifted(repo, results) == ["experiments/README.md"]
