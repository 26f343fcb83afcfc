"""`neurocnn baseline`: run folders like a CNN run's, pairing with a run's splits, resume, features."""

from __future__ import annotations

import argparse
import json

import joblib
import numpy as np
import pandas as pd
import pytest
import yaml

from neurocnn.baselines import CVOptions, lbp_histograms, run_deep2d, run_regional
from neurocnn.baselines.lbp import n_bins
from neurocnn.commands import baseline, compare
from neurocnn.data import splits as S
from neurocnn.data.cache import open_cache
from neurocnn.errors import NeuroCNNError
from training_fixtures import write_cache

CNN_PREDICTION_COLUMNS = ["participant_id", "session_id", "index", "repeat", "fold", "label"]
QUICK = [
    "--folds",
    "3",
    "--inner",
    "2",
    "--grid",
    "C=1,10",
    "--grid",
    "gamma=1",
    "--bootstrap",
    "50",
    "--quiet",
]


def cli(argv: list[str]) -> int:
    """The two verbs on a parser of their own (the project's cli.py registers them)."""
    parser = argparse.ArgumentParser(prog="neurocnn")
    sub = parser.add_subparsers(dest="command")
    baseline.register(sub)
    compare.register(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except NeuroCNNError as exc:
        print(f"neurocnn {args.command}: error: {exc}")
        return 2


@pytest.fixture(scope="module")
def svm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cache = write_cache(root / "cache", n=30, shape=(8, 10, 8), effect=1.0)
    assert cli(["baseline", "svm", str(cache), "--out", str(root / "svm"), *QUICK]) == 0
    return root / "svm"


def test_run_folder_has_the_layout_of_a_cnn_run(svm_run):
    for name in ("config.yaml", "data.json", "splits.tsv", "environment.json", "predictions.csv",
                 "metrics.json", "summary.json"):  # fmt: skip
        assert (svm_run / name).is_file(), name
    config = yaml.safe_load((svm_run / "config.yaml").read_text())
    assert config["baseline"] == "svm" and config["model"]["name"] == "svm_voxels"
    data = json.loads((svm_run / "data.json").read_text())
    classes = data["classes"]
    pooled = pd.read_csv(svm_run / "predictions.csv")
    assert list(pooled.columns) == [*CNN_PREDICTION_COLUMNS, *[f"prob_{c}" for c in classes], "prediction"]
    assert set(pooled["label"]) <= set(classes) and len(pooled) == 30
    summary = json.loads((svm_run / "summary.json").read_text())
    for key in ("per_fold", "mean_std", "pooled", "bootstrap", "folds_done", "classes"):
        assert key in summary
    assert summary["folds_done"] == 3 and summary["missing"] == []
    lo, hi = summary["pooled"]["balanced_accuracy"]["ci95"]
    assert lo <= summary["pooled"]["balanced_accuracy"]["value"] <= hi
    fold = svm_run / "folds" / "r0_f1"
    metrics = json.loads((fold / "metrics.json").read_text())
    assert set(metrics["best_params"]) == {"clf__C", "clf__kernel"}
    assert "GridSearchCV" in metrics["selection"]
    search = pd.read_csv(fold / "search.csv")
    assert len(search) == 2 and {"mean_score", "rank", "inner0", "inner1"} <= set(search.columns)
    # the saved model reproduces the saved probabilities
    model = joblib.load(fold / "model.joblib")
    cache = open_cache(config["cache"])
    preds = pd.read_csv(fold / "predictions.csv")
    X = cache.array()[preds["index"].to_numpy()].reshape(len(preds), -1)
    from neurocnn.baselines import voxel_features

    features, _ = voxel_features(cache)
    prob = model.predict_proba(features[preds["index"].to_numpy()])
    assert np.allclose(prob, preds[[f"prob_{c}" for c in classes]].to_numpy(), atol=1e-6)
    assert X.shape[1] >= features.shape[1]


def test_splits_of_a_run_are_reused_and_compare_pairs_the_folds(svm_run, tmp_path, capsys):
    # no cache given: the cohort of the run named by --splits
    out = tmp_path / "lbp"
    assert cli(["baseline", "lbp", "--splits", str(svm_run), "--out", str(out), *QUICK[2:]]) == 0
    assert (out / "splits.tsv").read_text() == (svm_run / "splits.tsv").read_text()
    capsys.readouterr()
    assert cli(["compare", str(svm_run), str(out), "--permutations", "200", "--bootstrap", "50",
                "--out", str(tmp_path / "cmp")]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "svm − lbp" in text and "corrected t-test" in text
    pairs = pd.read_csv(tmp_path / "cmp" / "pairs.csv")
    assert pairs["p_ttest"].notna().all() and pairs["p_permutation"].notna().all()
    assert pairs["design"].eq("cross-validation").all()


def test_existing_runs_are_kept_and_resume_redoes_only_missing_folds(svm_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "svm"
    shutil.copytree(svm_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    args = ["baseline", "svm", config["cache"], "--out", str(run), *QUICK]
    assert cli(args) == 2
    assert "--resume" in capsys.readouterr().out
    (run / "folds" / "r0_f2" / "metrics.json").unlink()
    kept = (run / "folds" / "r0_f0" / "metrics.json").stat().st_mtime_ns
    assert cli([*args, "--resume"]) == 0
    assert (run / "folds" / "r0_f2" / "metrics.json").exists()
    assert (run / "folds" / "r0_f0" / "metrics.json").stat().st_mtime_ns == kept
    assert pd.read_csv(run / "predictions.csv").equals(pd.read_csv(svm_run / "predictions.csv"))
    changed = ["baseline", "svm", config["cache"], "--out", str(run), *QUICK, "--mask", "none"]
    assert cli([*changed, "--resume"]) == 2
    assert "different configuration" in capsys.readouterr().out


def test_user_errors_name_the_problem(tmp_path):
    cache = write_cache(tmp_path / "cache", n=20, shape=(4, 4, 4))
    with pytest.raises(NeuroCNNError, match="--table FILE or from --atlas"):
        run_regional(cache, tmp_path / "r", CVOptions(folds=3))
    manifest = open_cache(cache).manifest
    pd.DataFrame({"participant_id": manifest["participant_id"][:15], "v": 1.0}).to_csv(
        tmp_path / "t.csv", index=False
    )
    with pytest.raises(NeuroCNNError, match="5 labelled participant"):
        run_regional(cache, tmp_path / "r", CVOptions(folds=3), table=tmp_path / "t.csv")
    with pytest.raises(NeuroCNNError, match="pre-trained 2D weights"):
        run_deep2d(cache, tmp_path / "d", CVOptions(folds=3))
    with pytest.raises(NeuroCNNError, match="unknown regional model"):
        run_regional(cache, tmp_path / "r", CVOptions(folds=3), models=["rf"], table=tmp_path / "t.csv")
    other = S.kfold(
        open_cache(write_cache(tmp_path / "other", n=24, shape=(4, 4, 4), prefix="x-")).manifest, 3
    )
    S.save_splits(other, tmp_path / "other.tsv")
    full = pd.DataFrame({"participant_id": manifest["participant_id"], "v": 1.0})
    full.to_csv(tmp_path / "all.csv", index=False)
    with pytest.raises(NeuroCNNError, match="another cohort|does not have"):
        run_regional(
            cache, tmp_path / "r", CVOptions(splits=tmp_path / "other.tsv"), table=tmp_path / "all.csv"
        )


def test_lbp_histograms():
    rng = np.random.default_rng(0)
    volume = np.zeros((12, 12, 6), dtype=np.float32)
    volume[2:10, 2:10, 1:5] = rng.normal(5, 1, (8, 8, 4))
    h = lbp_histograms(volume)
    assert h.shape == (1, n_bins(8, "uniform")) == (1, 10)
    assert h.sum() == pytest.approx(1)
    # patterns compare neighbours: a scaled image gives the same codes
    assert np.allclose(lbp_histograms(volume * 3.0), h)
    regions = np.zeros(volume.shape, dtype=int)
    regions[:6], regions[6:] = 1, 2
    per = lbp_histograms(volume, regions=regions, region_ids=[1, 2], method="nri_uniform")
    assert per.shape == (2, 59) and np.allclose(per.sum(1), 1)
    smooth = np.zeros_like(volume)
    smooth[2:10, 2:10, 1:5] = np.linspace(1, 2, 8)[:, None, None]
    assert not np.allclose(lbp_histograms(smooth), h)


def test_deep2d_features_of_a_weights_file_feed_the_svm(tmp_path):
    import torch

    from neurocnn.models.classic2d import backbone_2d

    net = backbone_2d("resnet18", in_channels=3, num_classes=2, input_shape=(16, 16))
    torch.save(net.state_dict(), tmp_path / "resnet18.pt")
    cache = write_cache(tmp_path / "cache", n=24, shape=(16, 16, 4), effect=2.0)
    options = CVOptions(folds=3, inner_folds=2, grid=("C=1",), n_boot=50, progress=False, save_models=False)
    summary = run_deep2d(
        cache, tmp_path / "deep", options, weights=tmp_path / "resnet18.pt", backbone="resnet18"
    )
    config = yaml.safe_load((tmp_path / "deep" / "config.yaml").read_text())
    assert config["features"]["n_features"] == 512 and config["features"]["backbone"] == "resnet18"
    assert summary["folds_done"] == 3 and summary["n_subjects"] == 24


def test_a_cnn_run_and_a_baseline_on_its_splits_are_compared_fold_by_fold(tmp_path, capsys):
    """`neurocnn cv` → `neurocnn baseline svm --splits RUN` (cohort taken from the run) → compare."""
    import logging

    from neurocnn.training import parse_config, run_cv
    from training_fixtures import tiny_config

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    cache = write_cache(tmp_path / "cache", n=24, effect=3.0)
    net = {"name": "sequential_1", "options": {"filters": 2, "hidden": 4, "dropout": 0.0}}
    config = parse_config(tiny_config(cache, model=net, train={"max_epochs": 1, "batch_size": 8}))
    cnn = tmp_path / "cnn"
    assert run_cv(config, cnn, progress=False).summary is not None
    assert cli(["baseline", "svm", "--splits", str(cnn), "--out", str(tmp_path / "svm"), *QUICK[2:]]) == 0
    assert S.load_splits(tmp_path / "svm" / "splits.tsv").equals(S.load_splits(cnn / "splits.tsv"))
    capsys.readouterr()
    assert (
        cli(["compare", str(cnn), str(tmp_path / "svm"), "--permutations", "100", "--bootstrap", "20"]) == 0
    )
    out = capsys.readouterr().out
    assert "cnn − svm" in out
    row = next(line for line in out.splitlines() if line.startswith("| cnn − svm | balanced accuracy"))
    assert row.split("|")[5].strip() != "–"  # the corrected t-test ran: same folds


def test_three_classes(tmp_path):
    cache = open_cache(write_cache(tmp_path / "cache", n=45, shape=(4, 4, 4), classes=("hc", "mci", "ad")))
    m = cache.manifest
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {"participant_id": m["participant_id"], "a": m["label_index"] + rng.normal(0, 0.3, 45)}
    )
    table["b"] = rng.normal(size=45)
    table.to_csv(tmp_path / "t.csv", index=False)
    options = CVOptions(folds=3, inner_folds=2, n_boot=50, progress=False, save_models=False)
    lr = run_regional(cache, tmp_path / "r" / "lr", options, models=["lr"], table=tmp_path / "t.csv")["lr"]
    assert lr["pooled"]["balanced_accuracy"]["value"] > 0.8
    options.grid = ("C=1", "gamma=1")
    run_regional(cache, tmp_path / "r" / "svm", options, models=["svm"], table=tmp_path / "t.csv")
    pooled = pd.read_csv(tmp_path / "r" / "svm" / "predictions.csv")
    assert np.allclose(pooled[["prob_hc", "prob_mci", "prob_ad"]].sum(axis=1), 1)
    from neurocnn.evaluation.compare import compare_runs

    result = compare_runs([tmp_path / "r" / "lr", tmp_path / "r" / "svm"], n_permutations=50, n_boot=20)
    assert len(result.pairs) == 2 and result.pairs["p_permutation"].notna().all()


def test_importances_are_pooled_only_when_every_fold_has_the_same_kind(tmp_path):
    from neurocnn.baselines.runfolder import COEFFICIENT, GAIN, gather_importance

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "regional_select"}}))
    for fold, kind, values in (("r0_f0", COEFFICIENT, [0.5, -2.0]), ("r0_f1", GAIN, [0.1, 0.9])):
        (tmp_path / "folds" / fold).mkdir(parents=True)
        pd.DataFrame({"feature": ["a", "b"], "importance": values, "kind": kind}).to_csv(
            tmp_path / "folds" / fold / "importance.csv", index=False
        )
    assert gather_importance(tmp_path, [(0, 0), (0, 1)]) is None  # `select` chose LR here, XGB there
    table = gather_importance(tmp_path, [(0, 0)])
    assert list(table["feature"]) == ["b", "a"] and table.loc[0, "mean"] == -2.0
    assert (tmp_path / "feature_importance.png").exists()


def test_feature_names_from_a_label_table_stay_unique(tmp_path):
    from neurocnn.baselines import table_features

    manifest = open_cache(write_cache(tmp_path / "cache", n=6, shape=(4, 4, 4))).manifest
    table = pd.DataFrame({"participant_id": manifest["participant_id"], "82": 1.0, "417": 2.0, "701": 3.0})
    table.to_csv(tmp_path / "v.csv", index=False)
    names = {"82": "Frontal_WM_L", "417": "Frontal_WM_L", "701": "TotalBrain"}
    X, columns, _ = table_features(manifest, tmp_path / "v.csv", names=names)
    assert columns == ["Frontal_WM_L [82]", "Frontal_WM_L [417]", "TotalBrain"]
    assert X.shape == (6, 3) and (X[:, 1] == 2).all()


def test_mask_none_keeps_only_voxels_seen_in_training_subjects(tmp_path):
    """With --mask none the voxel SVM must not keep a voxel that is non-zero only in test subjects
    (its mask is learnt inside each fold, as the `auto` one is)."""
    import joblib

    from neurocnn.baselines import run_svm, voxel_features

    path = write_cache(tmp_path / "cache", n=30, shape=(4, 4, 4), effect=2.0)
    data = np.load(path / "data.npy")
    data[:, 0, 3, 3, 3] = 0.0
    data[7, 0, 3, 3, 3] = 5.0  # non-zero in subject 7 only
    np.save(path / "data.npy", data)
    cache = open_cache(path)
    _, positions = voxel_features(cache)
    column = int(np.flatnonzero(positions == np.ravel_multi_index((0, 3, 3, 3), (1, 4, 4, 4)))[0])
    options = CVOptions(folds=3, inner_folds=2, grid=("C=1", "gamma=1"), n_boot=20, progress=False)
    run_svm(cache, tmp_path / "svm", options, mask="none")
    table = S.load_splits(tmp_path / "svm" / "splits.tsv")
    for fold in range(3):
        test = S.split_indices(table, 0, fold)["test"]
        support = joblib.load(tmp_path / "svm" / "folds" / f"r0_f{fold}" / "model.joblib")[0].support_
        assert support[column] == (7 not in test)
        assert support.sum() == len(positions) - (7 in test)


def test_inner_folds_are_honoured_or_refused_never_lowered(tmp_path, capsys):
    """--inner 8 on training folds with 5 participants per class ran 5 inner folds while config.yaml
    said 8."""
    cache = write_cache(tmp_path / "cache", n=12, shape=(6, 6, 6))
    out = tmp_path / "svm"
    argv = ["baseline", "svm", str(cache), "--out", str(out), "--folds", "2", "--grid", "C=1", "--quiet"]
    assert cli([*argv, "--inner", "4", "--bootstrap", "20"]) == 2
    said = capsys.readouterr().out
    assert "inner folds = 4 (--inner): the training fold r0_f0 has only 3 participant(s) of class" in said
    assert "give --inner 3 or fewer" in said and not out.exists()
    assert cli([*argv, "--inner", "3", "--bootstrap", "20"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["selection"]["inner_folds"] == 3
    metrics = json.loads((out / "folds" / "r0_f0" / "metrics.json").read_text())
    assert "k=3" in json.dumps(metrics)
