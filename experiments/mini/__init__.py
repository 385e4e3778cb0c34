"""The one-machine reproduction of the paper's claims.

    python -m experiments.mini STUDY [--toy] [--seeds=0,1,2] [--out=experiments/results]

Each study is one module with TITLE, CLAIM (an evidence.Claim: the paper's
words, the comparison and the rule), COST (its estimate on 2 CPU cores),
DEFAULT_SEEDS, planned_runs(setting) (how many training runs run(setting)
asks for: the progress line's N), judge(records) (the rule: an
evidence.Verdict) and run(setting):
it builds configs of the project's schema, trains them with
vit_jax.train.train_and_evaluate, scores them with vit_jax.evaluate (and
vit_jax.analysis) and returns a report.StudyResult, which __main__ writes as
JSON, markdown and PNG with the verdict judge printed. `report` writes the
README sections from the JSON and `check` confirms their provenance
(experiments/mini/readme.py, provenance.py). Data: Fashion-MNIST; see
experiments/README.md.
"""

STUDIES = (
    "data_size",
    "compute",
    "posemb",
    "classifier",
    "resolution",
    "transfer",
    "mpp",
    "analysis",
)
