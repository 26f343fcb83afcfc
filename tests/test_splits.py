"""Split properties: by participant, stratified, reproducible, saved and never silently replaced."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurocnn.data import splits as S
from neurocnn.errors import NeuroCNNError


def manifest(n_participants: int = 40, sessions: int = 2, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_participants) % 3 == 0).astype(int)  # imbalanced 1:2
    rows = [(f"p{p:03d}", f"ses-{s}", labels[p]) for p in range(n_participants) for s in range(sessions)]
    df = pd.DataFrame(rows, columns=["participant_id", "session_id", "label_index"])
    df.insert(0, "index", np.arange(len(df)))
    return df


def test_kfold_is_by_participant_and_covers_everyone_once():
    m = manifest()
    table = S.kfold(m, 5, repeats=3)
    for _, split in table.groupby(["repeat", "fold"]):
        assert split.groupby("participant_id")["role"].nunique().max() == 1
        assert len(split) == len(m)
    for _, rep in table[table.role == "test"].groupby("repeat"):
        assert sorted(rep["index"]) == list(range(len(m)))


def test_kfold_class_counts_within_one_of_ideal():
    m = manifest(53, sessions=1)
    table = S.kfold(m, 10, repeats=2, val_fraction=0)
    per_class = m.groupby("label_index").size()
    for _, split in table[table.role == "test"].groupby(["repeat", "fold"]):
        counts = split.groupby("label_index").size()
        for c, total in per_class.items():
            assert abs(counts.get(c, 0) - total / 10) < 1


def test_same_seed_same_splits_other_seed_other_splits():
    m = manifest()
    pd.testing.assert_frame_equal(S.kfold(m, 5, seed=3), S.kfold(m, 5, seed=3))
    assert not S.kfold(m, 5, seed=3).equals(S.kfold(m, 5, seed=4))


def test_validation_is_carved_from_training_never_test():
    table = S.kfold(manifest(), 5, val_fraction=0.1)
    for _, split in table.groupby(["repeat", "fold"]):
        val = set(split.loc[split.role == "val", "participant_id"])
        test = set(split.loc[split.role == "test", "participant_id"])
        assert val and not val & test
        assert len(val) == 4  # 10% of 40 participants


def test_nested_inner_splits_stay_inside_the_outer_training_set():
    table = S.kfold(manifest(), 4, nested=3)
    for (r, f), outer in table[table.inner == -1].groupby(["repeat", "fold"]):
        test = set(outer.loc[outer.role == "test", "participant_id"])
        inner = table[(table.repeat == r) & (table.fold == f) & (table.inner >= 0)]
        assert inner["inner"].nunique() == 3
        assert not test & set(inner["participant_id"])


def test_holdout_fractions_and_subsets():
    m = manifest(100, sessions=1)
    table = S.holdout(m, (0.8, 0.1, 0.1))
    assert table.groupby("role").size().to_dict() == {"test": 10, "train": 80, "val": 10}
    sub = S.subsample(S.kfold(m, 5), 0.2)
    for _, split in sub.groupby(["repeat", "fold"]):
        n_train = split[split.role == "train"]["participant_id"].nunique()
        assert n_train == 14  # 20% of the 70 training participants
        assert split[split.role == "test"].shape[0] == 20
        assert split[split.role == "train"]["label_index"].nunique() == 2


def test_independent_test_cohort_split_has_no_test_rows():
    table = S.independent(manifest())
    assert set(table.role) == {"train", "val"}


def test_leakage_check_refuses_a_participant_in_train_and_test():
    table = S.kfold(manifest(), 5)
    pid = table.loc[(table.fold == 0) & (table.role == "test"), "participant_id"].iloc[0]
    leaked = table.copy()
    row = leaked[(leaked.fold == 0) & (leaked.participant_id == pid)].index[0]
    leaked.loc[row, "role"] = "train"
    with pytest.raises(NeuroCNNError, match=f"participant {pid} is in test and train"):
        S.check_no_leakage(leaked)


def test_saved_splits_are_read_back_and_never_silently_replaced(tmp_path):
    m = manifest()
    path = tmp_path / "run" / "splits.tsv"
    table = S.kfold(m, 5, seed=1)
    S.save_splits(table, path)
    pd.testing.assert_frame_equal(S.load_splits(path), table)
    S.save_splits(table, path)  # identical: fine
    with pytest.raises(NeuroCNNError, match="already holds different splits"):
        S.save_splits(S.kfold(m, 5, seed=2), path)
    no_sessions = m.assign(session_id=np.nan)
    S.save_splits(S.kfold(no_sessions, 5), tmp_path / "b.tsv")
    S.save_splits(S.kfold(no_sessions, 5), tmp_path / "b.tsv")  # read back equal: no error
    idx = S.split_indices(table, 0, 0)
    assert set(idx) == {"train", "val", "test"} and len(np.concatenate(list(idx.values()))) == 80


def test_too_many_folds_and_inconsistent_sessions_are_refused():
    with pytest.raises(NeuroCNNError, match="fewer participants than the 20 folds"):
        S.kfold(manifest(30), 20)
    m = manifest()
    m.loc[1, "label_index"] = 1 - m.loc[1, "label_index"]
    with pytest.raises(NeuroCNNError, match="different labels in different sessions"):
        S.kfold(m, 5)


def test_subjects_without_a_label_are_left_out_by_name():
    m = manifest(20, sessions=1)
    m.loc[[3, 7], "label_index"] = -1
    for make in (lambda: S.kfold(m, 2), lambda: S.holdout(m), lambda: S.independent(m)):
        match = r"2 of 20 subject\(s\) have no label .*\(p003/ses-0, p007/ses-0\)"
        with pytest.warns(UserWarning, match=match):
            table = make()
        assert not {"p003", "p007"} & set(table["participant_id"])
        assert set(table["participant_id"]) == set(m["participant_id"]) - {"p003", "p007"}
    m["label_index"] = -1
    with pytest.raises(NeuroCNNError, match="no subject of the cohort has a label.*--label"):
        S.kfold(m, 2)


def test_a_subset_of_nested_splits_keeps_the_inner_folds_inside_the_kept_training_fold():
    """`--subset` with `--nested`: the inner folds of each outer split use only the outer training
    subjects that were kept (before, each inner split was thinned on its own and 21 of 48 inner
    subjects of this size of run lay outside the subsampled outer training set)."""
    m = manifest(60, sessions=1)
    table = S.subsample(S.kfold(m, 5, nested=3, seed=2), 0.5, seed=2)
    outer = table[table.inner == -1]
    for (r, f), split in outer.groupby(["repeat", "fold"]):
        kept = set(split.loc[split.role != "test", "participant_id"])
        inner = table[(table.repeat == r) & (table.fold == f) & (table.inner >= 0)]
        assert set(inner["participant_id"]) == kept
        for _, one in inner.groupby("inner"):
            assert {"train", "test"} <= set(one["role"])
    # the outer subsets are those of the same splits without nesting (existing runs keep theirs)
    plain = S.subsample(S.kfold(m, 5, seed=2), 0.5, seed=2)
    pd.testing.assert_frame_equal(outer.reset_index(drop=True), plain.reset_index(drop=True))
    S.check_nested(table)


def test_inner_splits_outside_the_outer_training_fold_are_refused():
    table = S.kfold(manifest(40, sessions=1), 4, nested=2)
    outer_train = table[(table.inner == -1) & (table.fold == 0) & (table.role == "train")]
    thinned = table.drop(outer_train.index[::2])  # the outer fold thinned, its inner splits not
    with pytest.raises(NeuroCNNError, match="r0_f0: inner split 0 uses .* outside the outer training"):
        S.check_nested(thinned)


def test_a_cohort_of_one_class_is_refused_by_splits_cv_and_cohort(make_cohort, tmp_path, capsys):
    """Controls only went through to a 'balanced accuracy 1.000, AUC nan' cross-validation."""
    from neurocnn.cli import main
    from neurocnn.training import parse_config, run_cv
    from training_fixtures import tiny_config, write_cache

    m = manifest()
    m["label_index"] = 0
    with pytest.raises(NeuroCNNError, match=r"needs at least two classes, found \['0'\]"):
        S.kfold(m, 2)
    with pytest.raises(NeuroCNNError, match="at least two classes"):
        S.holdout(m, (0.8, 0.1, 0.1))
    cache = write_cache(tmp_path / "cache", n=8, classes=("control",))
    out = tmp_path / "splits.tsv"
    assert main(["splits", str(cache), "--folds", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and f"{cache}: a classifier needs at least two classes, found ['control']" in err
    )
    assert not out.exists()
    with pytest.raises(NeuroCNNError, match=r"found \['control'\]"):
        run_cv(parse_config(tiny_config(cache, splits={"folds": 2})), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    # the check command: a warning (a one-class test cohort is fine for evaluate), an error with --folds
    table = make_cohort(4, modalities=("gm",), mask=False)
    table.write_text(table.read_text().replace("patient", "control"))
    args = ["cohort", str(table), "--images", "gm", "--label", "diagnosis"]
    assert main(args) == 0
    assert "warning: label 'diagnosis' has one class ('control')" in capsys.readouterr().err
    assert main([*args, "--folds", "2"]) == 2
    assert "a classifier needs at least two classes, found ['control']" in capsys.readouterr().err
