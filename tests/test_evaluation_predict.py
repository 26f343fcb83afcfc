"""`neurocnn evaluate` and `neurocnn predict` on generated NIfTI cohorts: scans are prepared like the
training cohort, the fold models vote, and scans from the training data are flagged."""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import pandas as pd
import pytest

from neurocnn.commands import evaluate, predict
from neurocnn.data.cohort import read_cohort
from neurocnn.data.prepare import prepare_cohort
from neurocnn.data.preprocess import PrepareParams
from neurocnn.errors import NeuroCNNError
from neurocnn.evaluation.ensemble import majority_vote
from neurocnn.training import parse_config, run_cv
from training_fixtures import tiny_config


def parse(module, argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    module.register(sub)
    return parser.parse_args(argv)


def test_majority_vote_breaks_ties_by_mean_probability():
    preds = np.array([[0, 1, 1], [1, 0, 1]])  # 2 models × 3 subjects
    mean = np.array([[0.4, 0.6], [0.7, 0.3], [0.2, 0.8]])
    assert majority_vote(preds, mean).tolist() == [1, 0, 1]


def test_evaluate_and_predict_from_nifti(make_cohort, tmp_path, capsys):
    import lightning.pytorch  # noqa: F401

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    table = make_cohort(16, modalities=("gm",), mask=False)
    cohort = read_cohort(table, images=["gm"], label="diagnosis")
    cache = prepare_cohort(cohort, tmp_path / "cache", PrepareParams(), jobs=1, progress=False).cache
    run = tmp_path / "run"
    cfg = tiny_config(cache.path, splits={"folds": 2, "val_fraction": 0.25}, train={"max_epochs": 1})
    run_cv(parse_config(cfg), run, progress=False)

    # an "independent" cohort: the same generator, new participants
    other = pd.read_csv(table, sep="\t", dtype=str)
    other["participant_id"] = other["participant_id"].str.replace("sub-", "new-")
    other["gm"] = [str(table.parent / p) for p in other["gm"]]
    other_table = tmp_path / "other.tsv"
    other.to_csv(other_table, sep="\t", index=False)
    # (the images are the training files, so the file-hash check must still flag them)
    args = parse(evaluate, ["evaluate", str(run), "--cohort", str(other_table), "--label", "diagnosis"])
    assert evaluate.run(args) == 0
    err = capsys.readouterr().err
    assert "was a training scan" in err and "new-" in err and "participant id new-" not in err
    result = json.loads((run / "evaluations" / "other" / "metrics.json").read_text())
    assert result["n_models"] == 2 and result["n_subjects"] == 16
    ba = result["majority_vote"]["balanced_accuracy"]
    assert ba["ci95"][0] <= ba["value"] <= ba["ci95"][1]
    # a second cohort whose table has the same name must not replace the first one's results
    before = (run / "evaluations" / "other" / "metrics.json").read_bytes()
    with pytest.raises(NeuroCNNError, match="earlier evaluation.*--name.*--overwrite"):
        evaluate.run(parse(evaluate, ["evaluate", str(run), "--cohort", str(other_table)]))
    assert (run / "evaluations" / "other" / "metrics.json").read_bytes() == before
    again = ["evaluate", str(run), "--cohort", str(other_table), "--label", "diagnosis", "--overwrite"]
    assert evaluate.run(parse(evaluate, again)) == 0
    capsys.readouterr()
    ens = pd.read_csv(run / "evaluations" / "other" / "predictions.csv")
    per = pd.read_csv(run / "evaluations" / "other" / "predictions_per_model.csv")
    mean = per.groupby("participant_id")["prob_patient"].mean()
    assert np.allclose(ens.set_index("participant_id")["prob_patient"], mean.loc[ens["participant_id"]])

    # predict: the training participants are flagged, refused with --strict
    scans = [str(table.parent / p) for p in pd.read_csv(table, sep="\t")["gm"][:3]]
    out = tmp_path / "pred.csv"
    assert predict.run(parse(predict, ["predict", str(run), *scans, "--out", str(out)])) == 0
    pred = pd.read_csv(out)
    assert list(pred.columns[:2]) == ["participant_id", "session_id"]
    assert {"prob_control", "prob_patient", "prediction", "vote"} <= set(pred.columns)
    assert len(pred) == 3
    err = capsys.readouterr().err
    assert "3 subject(s) have scans that were in the training data" in err  # subjects, not problems
    assert "sub-000: gm file" in err and "was a training scan" in err and "participant id" not in err
    with pytest.raises(NeuroCNNError, match="strict"):
        predict.run(parse(predict, ["predict", str(run), *scans, "--strict"]))
    prepared = list((run / "prepared").iterdir())
    assert any(p.name.startswith("predict-") for p in prepared)

    # a prepared cohort (--cache) is checked too: here the training cache itself
    named = ["evaluate", str(run), "--cache", str(cache.path), "--name", "train"]
    assert evaluate.run(parse(evaluate, named)) == 0
    err = capsys.readouterr().err
    assert "16 subject(s) have scans that were in the training data" in err and "sub-000: gm file" in err
    with pytest.raises(NeuroCNNError, match="strict"):
        predict.run(parse(predict, ["predict", str(run), "--cache", str(cache.path), "--strict"]))
    # ... and refused when prepared with other settings than the training cohort
    other_cohort = read_cohort(other_table, images=["gm"], label="diagnosis")
    clipped = PrepareParams(clip_percentiles=(2.0, 98.0))
    odd = prepare_cohort(other_cohort, tmp_path / "odd", clipped, jobs=1, progress=False).cache
    with pytest.raises(NeuroCNNError, match="other settings.*clip_percentiles"):
        evaluate.run(parse(evaluate, ["evaluate", str(run), "--cache", str(odd.path)]))
    assert not (run / "evaluations" / "odd").exists()
