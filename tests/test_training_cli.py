"""The cv, evaluate and predict verbs through `neurocnn.cli.main` (registered here if the CLI does
not list them yet)."""

from __future__ import annotations

import pytest

from neurocnn import cli
from training_fixtures import write_cache

VERBS = ("cv", "evaluate", "predict")


@pytest.fixture
def main(monkeypatch):
    missing = tuple(v for v in VERBS if v not in cli.COMMANDS)
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + missing)
    return cli.main


def test_help_of_each_verb_has_an_example(main, capsys):
    for verb in VERBS:
        with pytest.raises(SystemExit) as done:
            main([verb, "--help"])
        assert done.value.code == 0
        assert "Example:" in capsys.readouterr().out


def test_cv_fold_job_then_gather(main, tmp_path, capsys):
    cache = write_cache(tmp_path / "cache", 16, effect=3.0)
    common = [
        "cv",
        str(cache),
        "--model",
        "mrinet",
        "--model-option",
        "widths=[4,8]",
        "--folds",
        "2",
        "--val",
        "0.25",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--no-progress",
        "--seed",
        "3",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main([*common, "--fold", "0"]) == 0
    assert "neurocnn cv gather" in capsys.readouterr().out
    assert main(["cv", "gather", str(tmp_path / "run")]) == 1  # fold 1 is missing
    assert "missing: r0_f1" in capsys.readouterr().out
    assert main([*common, "--fold", "1"]) == 0
    assert "balanced accuracy" in capsys.readouterr().out
    # gathering again gives the run's own CIs (its seed, not 0)
    run = tmp_path / "run"
    before = (run / "summary.json").read_text()
    assert main(["cv", "gather", str(run)]) == 0
    assert (run / "summary.json").read_text() == before
    # a fold trained again: the run's pooled results are gone until every fold is back
    import neurocnn.training.crossval as crossval

    def fails(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("out of memory")

    real = crossval.fit_fold
    crossval.fit_fold = fails
    try:
        assert main([*common, "--fold", "0", "--overwrite"]) == 1
    finally:
        crossval.fit_fold = real
    assert not (run / "summary.json").exists() and not (run / "predictions.csv").exists()
    assert main([*common, "--fold", "0", "--resume"]) == 0
    assert (run / "summary.json").exists()
    capsys.readouterr()
    assert main(common) == 2  # exists: refused without --resume/--overwrite
    assert "--resume continues it" in capsys.readouterr().err
    assert main(["cv", "--resume", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert main(["cv", str(cache), "--out", str(tmp_path / "x")]) == 2
    assert "give a model" in capsys.readouterr().err
