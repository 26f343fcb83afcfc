"""Paired tests: calibrated under the null (simulation), powerful under a real difference, and the
`compare` table over CNN-style and baseline-style run folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from neurocnn.errors import NeuroCNNError
from neurocnn.evaluation.compare import compare_runs, load_run
from neurocnn.evaluation.paired_tests import (
    corrected_resampled_ttest,
    delong_test,
    holm,
    mcnemar_test,
    paired_permutation_test,
)


def _scores(rng, y, strength):
    """Probabilities of class 1 from a score with the given separation."""
    s = strength * (2 * y - 1) + rng.normal(size=len(y))
    p = 1 / (1 + np.exp(-s))
    return np.column_stack([1 - p, p])


def test_permutation_and_delong_p_values_are_uniform_under_the_null():
    """Two classifiers of equal quality (independent errors): p ~ U(0, 1)."""
    rng = np.random.default_rng(0)
    p_auc, p_bal, p_delong = [], [], []
    for _ in range(200):
        y = rng.permutation(np.arange(60) % 2)
        a, b = _scores(rng, y, 0.7), _scores(rng, y, 0.7)
        p_auc.append(paired_permutation_test(y, a, b, metric="auc", n_permutations=199, seed=1)["p_value"])
        p_bal.append(paired_permutation_test(y, a, b, n_permutations=199, seed=1)["p_value"])
        p_delong.append(delong_test(y, a[:, 1], b[:, 1])["p_value"])
    assert stats.kstest(p_auc, "uniform").pvalue > 0.01
    assert stats.kstest(p_delong, "uniform").pvalue > 0.01
    # balanced accuracy is discrete: its permutation p-values are conservative, never liberal
    assert np.mean(np.array(p_bal) <= 0.05) <= 0.08
    assert np.mean(np.array(p_auc) <= 0.05) == pytest.approx(0.05, abs=0.04)


def _nearest_centroid(x_train, y_train, x_test):
    """The nearest-centroid classifier in numpy (scikit-learn's overhead would dominate 3000 fits)."""
    centroids = np.stack([x_train[y_train == k].mean(axis=0) for k in (0, 1)])
    return ((x_test[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)


def test_corrected_t_test_holds_its_level_where_the_plain_one_does_not():
    """Two equally informative feature sets, each with a nearest-centroid classifier, 5 × 10-fold
    CV of one data set: the folds share training data (and the repeats share everything), so the
    plain t-test over the 50 fold differences rejects far too often; Nadeau & Bengio's corrected
    test keeps its level (Bouckaert & Frank 2004 report the same for r × k-fold)."""
    rng = np.random.default_rng(2)
    corrected, plain = [], []
    for _ in range(200):
        n = 80
        y = rng.permutation(np.arange(n) % 2)
        x1 = (y * 0.8 + rng.normal(size=(3, n))).T
        x2 = (y * 0.8 + rng.normal(size=(3, n))).T
        diffs = []
        for _repeat in range(5):
            cv = StratifiedKFold(10, shuffle=True, random_state=int(rng.integers(1e9)))
            for tr, te in cv.split(x1, y):
                right = [_nearest_centroid(x[tr], y[tr], x[te]) == y[te] for x in (x1, x2)]
                diffs.append(right[0].mean() - right[1].mean())
        corrected.append(corrected_resampled_ttest(diffs, 1 / 9)["p_value"])
        d = np.asarray(diffs)
        plain.append(stats.ttest_1samp(d, 0).pvalue if d.std() > 0 else 1.0)
    corrected, plain = np.nan_to_num(corrected, nan=1.0), np.nan_to_num(plain, nan=1.0)
    assert np.mean(corrected <= 0.05) <= 0.08
    assert 0.4 <= np.mean(corrected) <= 0.65  # about uniform (a little conservative)
    assert np.mean(plain <= 0.05) >= 0.2


def test_the_tests_detect_a_real_difference():
    rng = np.random.default_rng(3)
    y = rng.permutation(np.arange(120) % 2)
    good, poor = _scores(rng, y, 1.5), _scores(rng, y, 0.2)
    assert paired_permutation_test(y, good, poor, n_permutations=999)["p_value"] < 0.01
    assert paired_permutation_test(y, good, poor, metric="auc", n_permutations=999)["p_value"] < 0.01
    assert paired_permutation_test(y, good, poor, metric="mcc", n_permutations=199)["p_value"] < 0.01
    assert delong_test(y, good[:, 1], poor[:, 1])["p_value"] < 0.01
    assert mcnemar_test(good.argmax(1) == y, poor.argmax(1) == y)["p_value"] < 0.01
    folds = np.arange(120) % 10
    right_good, right_poor = good.argmax(1) == y, poor.argmax(1) == y
    d = [right_good[folds == f].mean() - right_poor[folds == f].mean() for f in range(10)]
    assert corrected_resampled_ttest(d, 1 / 9)["p_value"] < 0.05


def test_delong_matches_its_definition():
    """The fast algorithm against the O(m·n) structural components of DeLong et al. (1988)."""
    rng = np.random.default_rng(4)
    y = rng.permutation(np.arange(40) % 2).astype(bool)
    a = np.round(y * 0.8 + rng.normal(size=40), 1)  # rounded: ties count one half
    b = y * 0.5 + rng.normal(size=40)
    out = delong_test(y, a, b)
    assert out["auc_a"] == pytest.approx(roc_auc_score(y, a))
    assert out["auc_b"] == pytest.approx(roc_auc_score(y, b))

    def components(s):
        pos, neg = s[y], s[~y]
        psi = (pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])
        return psi.mean(axis=1), psi.mean(axis=0)

    (va, wa), (vb, wb) = components(a), components(b)
    s10, s01 = np.cov(np.vstack([va, vb])), np.cov(np.vstack([wa, wb]))
    cov = s10 / y.sum() + s01 / (~y).sum()
    se = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert out["se"] == pytest.approx(se)
    assert out["p_value"] == pytest.approx(2 * stats.norm.sf(abs(out["difference"]) / se))


def test_mcnemar_and_holm():
    a = np.array([True] * 30 + [False] * 10)
    b = np.array([True] * 20 + [False] * 15 + [True] * 5)
    r = mcnemar_test(a, b)
    assert (r["b"], r["c"]) == (10, 5) and r["method"] == "exact binomial"
    assert r["p_value"] == pytest.approx(stats.binomtest(10, 15).pvalue)
    big = mcnemar_test(
        np.r_[np.ones(40, bool), np.zeros(10, bool)], np.r_[np.zeros(30, bool), np.ones(20, bool)]
    )
    assert big["method"].startswith("chi-square")
    assert big["p_value"] == pytest.approx(stats.chi2.sf((abs(30 - 10) - 1) ** 2 / 40, 1))
    sm = pytest.importorskip("statsmodels.stats.contingency_tables")
    table = [[20, 10], [5, 5]]
    assert r["p_value"] == pytest.approx(sm.mcnemar(table, exact=True).pvalue)
    assert holm([0.01, np.nan, 0.04, 0.03]).round(3).tolist()[::2] == [0.03, 0.06]
    # as many discordant subjects each way: no evidence at all (the correction must not go below 0)
    half = np.r_[np.ones(15, bool), np.zeros(15, bool)]
    tie = mcnemar_test(half, ~half)
    assert tie["method"].startswith("chi-square") and tie["statistic"] == 0 and tie["p_value"] == 1.0


def test_corrected_t_test_without_variance_reports_no_p_value():
    """The same non-zero difference in every fold: the t statistic is infinite, and p = 0 would claim
    a certainty that a handful of folds cannot give."""
    r = corrected_resampled_ttest([0.1, 0.1, 0.1], 1 / 9)
    assert r["t"] == np.inf and np.isnan(r["p_value"])
    assert corrected_resampled_ttest([0.0, 0.0, 0.0], 1 / 9)["p_value"] == 1.0


def _write_run(folder, y, prob, folds, classes, *, repeat=0, names=True, summary=True):
    """A run folder as `neurocnn cv` writes it (labels as class names) or with class indices."""
    folder.mkdir(parents=True)
    pred = prob.argmax(1)
    table = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:03d}" for i in range(len(y))],
            "session_id": None,
            "index": np.arange(len(y)),
            "repeat": repeat,
            "fold": folds,
            "label": [classes[i] for i in y] if names else y,
        }
    )
    for k, c in enumerate(classes):
        table[f"prob_{c}"] = prob[:, k]
    table["prediction"] = [classes[i] for i in pred] if names else pred
    table.to_csv(folder / "predictions.csv", index=False)
    if summary:
        (folder / "summary.json").write_text(json.dumps({"classes": classes}))
    return folder


def test_compare_table_and_pairs(tmp_path):
    rng = np.random.default_rng(5)
    y = rng.permutation(np.arange(100) % 2)
    folds = np.arange(100) % 5
    classes = ["F", "M"]
    cnn = _write_run(tmp_path / "cnn", y, _scores(rng, y, 1.5), folds, classes)
    svm = _write_run(tmp_path / "svm", y, _scores(rng, y, 0.3), folds, classes, names=False, summary=False)
    other = _write_run(tmp_path / "shuffled", y, _scores(rng, y, 1.5), rng.permutation(folds), classes)
    result = compare_runs([cnn, svm, other], n_permutations=500, n_boot=200)
    assert list(result.runs["run"]) == ["cnn", "svm", "shuffled"]
    row = result.runs.iloc[0]
    assert row["balanced_accuracy_ci_low"] <= row["balanced_accuracy"] <= row["balanced_accuracy_ci_high"]
    pair = result.pairs.set_index(["a", "b", "metric"])
    strong = pair.loc[("cnn", "svm", "balanced_accuracy")]
    assert strong["difference"] > 0 and strong["ci_low"] > 0
    assert strong["p_permutation"] < 0.01 and strong["p_ttest"] < 0.05
    assert strong["test_train_ratio"] == pytest.approx(0.25)
    flipped = result.pair("svm", "cnn", "balanced_accuracy")  # stored as cnn − svm
    assert flipped["difference"] == pytest.approx(-strong["difference"])
    assert (flipped["ci_low"], flipped["ci_high"]) == pytest.approx((-strong["ci_high"], -strong["ci_low"]))
    assert flipped["p_ttest"] == strong["p_ttest"]
    assert (flipped["a_value"], flipped["b_value"]) == (strong["b_value"], strong["a_value"])
    assert flipped["t"] == pytest.approx(-strong["t"])
    assert result.pair("cnn", "svm", "balanced_accuracy")["difference"] == strong["difference"]
    assert result.pair("cnn", "nobody", "auc") is None
    assert np.isnan(pair.loc[("cnn", "shuffled", "auc"), "p_ttest"])  # different folds: no t-test
    assert any("different folds" in n for n in result.notes)
    assert (result.pairs["p_permutation_holm"] >= result.pairs["p_permutation"]).all()
    md = result.to_markdown()
    assert "cnn − svm" in md and "corrected t-test" in md
    written = result.write(tmp_path / "cmp")
    assert (written / "pairs.csv").exists() and (written / "comparison.md").exists()
    before = (written / "comparison.md").read_text()
    with pytest.raises(NeuroCNNError, match="earlier comparison.*--overwrite"):
        compare_runs([cnn, svm], n_permutations=10, n_boot=20).write(written)
    assert (written / "comparison.md").read_text() == before
    compare_runs([cnn, svm], n_permutations=10, n_boot=20).write(written, overwrite=True)
    assert (written / "comparison.md").read_text() != before


def test_non_finite_probabilities_are_one_line_errors(tmp_path):
    from neurocnn.cli import main

    rng = np.random.default_rng(3)
    y = rng.permutation(np.arange(40) % 2)
    prob = _scores(rng, y, 1.0)
    prob[7] = np.nan  # a diverged model
    bad = _write_run(tmp_path / "bad", y, prob, np.arange(40) % 4, ["F", "M"])
    good = _write_run(tmp_path / "good", y, _scores(rng, y, 1.0), np.arange(40) % 4, ["F", "M"])
    with pytest.raises(NeuroCNNError, match="sub-007 has a missing or non-finite probability"):
        compare_runs([good, bad], n_permutations=10, n_boot=20)
    assert main(["compare", str(good), str(bad), "--permutations", "10", "--bootstrap", "20"]) == 2


def test_a_single_run_gets_its_table_and_no_pairs(tmp_path):
    """One run alone (e.g. the first baseline of a study): metrics with CIs, an empty pairs table,
    and `pair` answers None instead of failing on the table's missing columns."""
    rng = np.random.default_rng(8)
    y = rng.permutation(np.arange(40) % 2)
    only = _write_run(tmp_path / "only", y, _scores(rng, y, 1.5), np.arange(40) % 4, ["F", "M"])
    result = compare_runs([only], n_permutations=10, n_boot=20)
    assert list(result.runs["run"]) == ["only"] and result.pairs.empty
    assert result.pair("only", "other", "auc") is None
    assert "only" in result.to_markdown()
    assert (result.write(tmp_path / "cmp") / "pairs.csv").exists()


def _manifest(rng, n):
    """A cache manifest of n participants with balanced random labels (for the split functions)."""
    return pd.DataFrame(
        {"index": np.arange(n), "participant_id": [f"sub-{i:03d}" for i in range(n)],
         "session_id": "", "label_index": rng.permutation(np.arange(n) % 2)}
    )  # fmt: skip


def test_repeated_holdout_t_test_uses_the_split_table_and_never_reports_p_0(tmp_path):
    """A repeated hold-out predicts only each repeat's test subjects, so the training-set size is
    not in the predictions: the corrected t-test takes it from the run's splits.tsv, and without
    one it is left out (NaN, with a note) instead of dividing by a NaN variance (t = inf, p = 0)."""
    from neurocnn.data.splits import holdout, save_splits

    rng = np.random.default_rng(9)
    n = 100
    manifest = _manifest(rng, n)
    splits = holdout(manifest, (0.6, 0.2, 0.2), repeats=5, seed=0)
    tests = splits[splits["role"] == "test"]

    def run(name: str, with_splits: bool):
        folder = tmp_path / name
        folder.mkdir()
        prob = rng.uniform(size=len(tests))  # two classifiers of no skill
        table = pd.DataFrame(
            {"participant_id": tests["participant_id"].to_numpy(), "repeat": tests["repeat"].to_numpy(),
             "fold": 0, "label": tests["label_index"].to_numpy(), "prob_0": 1 - prob, "prob_1": prob}
        )  # fmt: skip
        table.to_csv(folder / "predictions.csv", index=False)
        if with_splits:
            save_splits(splits, folder / "splits.tsv")
        return folder

    known = compare_runs([run("a", True), run("b", False)], n_permutations=50, n_boot=20)
    row = known.pairs.set_index("metric").loc["balanced_accuracy"]
    assert row["test_train_ratio"] == pytest.approx(20 / 80)  # 20 test, 60 train + 20 validation
    assert 0 < row["p_ttest"] <= 1 and 0 < row["p_ttest_holm"] <= 1
    unknown = compare_runs([run("c", False), run("d", False)], n_permutations=50, n_boot=20)
    row = unknown.pairs.set_index("metric").loc["balanced_accuracy"]
    assert np.isnan(row["p_ttest"]) and np.isnan(row["p_ttest_holm"])
    assert any("training-set size is unknown" in note for note in unknown.notes)


def test_one_test_set_gets_mcnemar_and_delong(tmp_path):
    rng = np.random.default_rng(6)
    y = rng.permutation(np.arange(80) % 2)
    a = _write_run(tmp_path / "a", y, _scores(rng, y, 1.5), 0, ["hc", "pt"])
    b = _write_run(tmp_path / "b", y, _scores(rng, y, 0.2), 0, ["hc", "pt"])
    result = compare_runs([a / "predictions.csv", b / "predictions.csv"], metrics=["accuracy", "auc"],
                          n_permutations=300, n_boot=100, names=["a", "b"])  # fmt: skip
    pairs = result.pairs.set_index("metric")
    assert (pairs["design"] == "test set").all()
    assert pairs.loc["accuracy", "p_mcnemar"] < 0.05 and pairs.loc["auc", "p_delong"] < 0.01
    assert pairs["p_ttest"].isna().all()


def test_runs_of_different_tasks_or_subjects_are_refused(tmp_path):
    rng = np.random.default_rng(7)
    y = rng.permutation(np.arange(20) % 2)
    a = _write_run(tmp_path / "a", y, _scores(rng, y, 1), np.arange(20) % 2, ["F", "M"])
    b = _write_run(tmp_path / "b", y, _scores(rng, y, 1), np.arange(20) % 2, ["hc", "pt"])
    with pytest.raises(NeuroCNNError, match="different classes"):
        compare_runs([a, b], n_permutations=10, n_boot=10)
    with pytest.raises(NeuroCNNError, match="no predictions.csv"):
        load_run(tmp_path)
    c = _write_run(tmp_path / "c", 1 - y, _scores(rng, y, 1), np.arange(20) % 2, ["F", "M"])
    with pytest.raises(NeuroCNNError, match="disagree on the label"):
        compare_runs([a, c], n_permutations=10, n_boot=10)


def test_corrected_t_test_does_not_depend_on_the_order_of_the_runs(tmp_path):
    """One run trained on a 20 % subset of each training fold: its n_test / n_train is larger than the
    full run's. The comparison takes the larger (conservative) ratio whichever run is named first."""
    from neurocnn.data.splits import kfold, save_splits, subsample

    rng = np.random.default_rng(3)
    n = 100
    manifest = _manifest(rng, n)
    full = kfold(manifest, 10, val_fraction=0.0, seed=0)
    small = subsample(full, 0.2, seed=0)
    test = full[full["role"] == "test"].sort_values("participant_id")
    y = test["label_index"].to_numpy()
    folds = test["fold"].to_numpy()
    runs = []
    for name, table, strength in (("full", full, 1.0), ("subset", small, 0.6)):
        folder = _write_run(tmp_path / name, y, _scores(rng, y, strength), folds, ["a", "b"])
        save_splits(table, folder / "splits.tsv")
        runs.append(folder)
    forward = compare_runs(runs, metrics=["auc"], n_permutations=50, n_boot=20)
    backward = compare_runs(runs[::-1], metrics=["auc"], n_permutations=50, n_boot=20)
    f, b = forward.pairs.iloc[0], backward.pairs.iloc[0]
    assert f["test_train_ratio"] == pytest.approx(b["test_train_ratio"])
    assert f["p_ttest"] == pytest.approx(b["p_ttest"])
    n_small_train = small[(small["fold"] == 0) & (small["role"] != "test")]["participant_id"].nunique()
    assert f["test_train_ratio"] == pytest.approx(10 / n_small_train, rel=0.2)
