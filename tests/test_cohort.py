"""Cohort reading and validation: every bad input gets its own clear message."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import affine, blob, save
from neurocnn.data.cohort import cohort_from_bids, read_cohort, validate_cohort
from neurocnn.errors import NeuroCNNError


def _cohort(table: Path, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("images", ["gm", "wm"])
    kw.setdefault("label", "diagnosis")
    return read_cohort(table, **kw)


def _problems(table: Path, n_folds: int | None = None, **kw) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(NeuroCNNError) as info:
        validate_cohort(_cohort(table, **kw), n_folds=n_folds)
    return str(info.value)


def test_reads_tsv_and_csv_with_stable_class_order(make_cohort):
    for sep in ("\t", ","):
        table = make_cohort(6, sep=sep)
        c = _cohort(table, covariates=["age", "site"], mask="mask")
        validate_cohort(c, n_folds=3)
        assert c.classes == ("control", "patient")
        assert list(c.labels()) == [0, 1, 0, 1, 0, 1]
        assert c.subjects[0].covariates == {"age": 40.0, "site": "A"}
        assert c.subjects[0].images["gm"].is_file()


def test_user_given_class_order_is_kept(make_cohort):
    c = _cohort(make_cohort(4), classes=["patient", "control"])
    assert c.classes == ("patient", "control") and list(c.labels()) == [1, 0, 1, 0]


def test_unknown_column_is_named(make_cohort):
    table = make_cohort(4)
    with pytest.raises(NeuroCNNError, match="unknown column.*'fa'.*the table has"):
        _cohort(table, images=["gm", "fa"])


def test_duplicate_rows(make_cohort):
    table = make_cohort(4)
    lines = table.read_text().splitlines()
    table.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(NeuroCNNError, match="sub-000: appears in 2 rows"):
        _cohort(table)


def test_missing_label_refused_unless_allowed(make_cohort):
    table = make_cohort(4)
    text = table.read_text().replace("sub-001\tpatient", "sub-001\t")
    table.write_text(text)
    with pytest.raises(NeuroCNNError, match="sub-001: no value in label column 'diagnosis'"):
        _cohort(table)
    c = _cohort(table, require_labels=False)
    assert c.subjects[1].label is None and c.label_index(c.subjects[1]) == -1


def test_a_label_cell_of_blanks_is_missing_not_a_class(make_cohort):
    table = make_cohort(4)
    table.write_text(table.read_text().replace("sub-001\tpatient", "sub-001\t   "))
    with pytest.raises(NeuroCNNError, match="sub-001: no value in label column 'diagnosis'"):
        _cohort(table)
    c = _cohort(table, require_labels=False)
    assert c.classes == ("control", "patient") and c.subjects[1].label is None


def test_one_image_file_under_two_participants_is_refused(make_cohort):
    table = make_cohort(4)
    text = table.read_text().replace("gm/sub-002_gm.nii.gz", "gm/../gm/sub-001_gm.nii.gz")
    table.write_text(text)
    with pytest.raises(
        NeuroCNNError, match=r"sub-001_gm.nii.gz: listed for sub-001 \[gm\] and sub-002 \[gm\]"
    ):
        _cohort(table)
    # one mask may serve every participant
    text = table.read_text().replace("gm/../gm/sub-001_gm.nii.gz", "gm/sub-002_gm.nii.gz")
    table.write_text(text.replace("mask/sub-002_mask.nii.gz", "mask/sub-001_mask.nii.gz"))
    assert len(_cohort(table, mask="mask")) == 4


def test_missing_file(make_cohort):
    table = make_cohort(4)
    (table.parent / "wm/sub-002_wm.nii.gz").unlink()
    msg = _problems(table)
    assert "sub-002 [wm]" in msg and "file not found" in msg


def test_corrupt_and_truncated_files(make_cohort):
    table = make_cohort(4)
    (table.parent / "gm/sub-000_gm.nii.gz").write_bytes(b"this is not a nifti file")
    path = table.parent / "gm/sub-001_gm.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    msg = _problems(table)
    assert "sub-000 [gm]" in msg and "not a readable NIfTI" in msg
    assert "sub-001 [gm]" in msg and "truncated or corrupt" in msg


def test_4d_nan_and_all_zero(make_cohort):
    table = make_cohort(4)
    root = table.parent
    save(root / "gm/sub-000_gm.nii.gz", np.zeros((*blob(np.random.default_rng()).shape, 3)) + 1)
    bad = blob(np.random.default_rng(1))
    bad[3, 3, 3] = np.nan
    save(root / "gm/sub-001_gm.nii.gz", bad)
    save(root / "gm/sub-002_gm.nii.gz", np.zeros_like(bad))
    msg = _problems(table)
    assert "sub-000 [gm]" in msg and "expected a 3D image, found 4D" in msg
    assert "sub-001 [gm]" in msg and "NaN or Inf" in msg
    assert "sub-002 [gm]" in msg and "all zero" in msg
    assert msg.count("\n  - ") == 3, "one line per problem"


def test_modalities_on_different_grids(make_cohort):
    table = make_cohort(4)
    rng = np.random.default_rng(0)
    save(table.parent / "wm/sub-000_wm.nii.gz", blob(rng, (10, 16, 12)))
    shifted = affine()
    shifted[0, 3] += 5
    save(table.parent / "wm/sub-001_wm.nii.gz", blob(rng), shifted)
    msg = _problems(table)
    assert "sub-000 [wm]" in msg and "shape (10, 16, 12) differs" in msg
    assert "sub-001 [wm]" in msg and "affine differs" in msg


def test_class_smaller_than_folds(make_cohort):
    msg = _problems(make_cohort(6), n_folds=5)
    assert "class 'control': 3 participant(s), fewer than the 5 folds" in msg


def test_all_problems_reported_at_once(make_cohort):
    table = make_cohort(6)
    (table.parent / "gm/sub-000_gm.nii.gz").unlink()
    (table.parent / "wm/sub-003_wm.nii.gz").unlink()
    msg = _problems(table, n_folds=4)
    assert "sub-000 [gm]" in msg and "sub-003 [wm]" in msg and "fewer than the 4 folds" in msg


def test_bids_folder(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["participant_id\tgroup"]
    for i, ses in [(1, "01"), (1, "02"), (2, "01")]:
        save(tmp_path / f"sub-{i:02d}/ses-{ses}/anat/sub-{i:02d}_ses-{ses}_T1w.nii.gz", blob(rng))
    rows += ["sub-01\tA", "sub-02\tB"]
    (tmp_path / "participants.tsv").write_text("\n".join(rows) + "\n")
    c = cohort_from_bids(tmp_path, "sub-*/ses-*/anat/*_T1w.nii.gz", label="group")
    assert [s.key for s in c.subjects] == ["sub-01/ses-01", "sub-01/ses-02", "sub-02/ses-01"]
    assert list(c.labels()) == [0, 0, 1]
    validate_cohort(c)
    nib.load(str(c.subjects[0].images["t1"]))
    with pytest.raises(NeuroCNNError, match="no file under"):
        cohort_from_bids(tmp_path, "nothing/*.nii")


def test_bids_masks_from_the_cli_and_clear_refusals(tmp_path, capsys):
    from neurocnn.cli import main

    rng = np.random.default_rng(1)
    for i in (1, 2, 3, 4):
        head = blob(rng)
        save(tmp_path / f"sub-{i:02d}/anat/sub-{i:02d}_T1w.nii.gz", head)
        save(tmp_path / f"derivatives/masks/sub-{i:02d}_mask.nii.gz", (head != 0).astype(np.uint8))
    table = "participant_id\tsex\nsub-01\tF\nsub-02\tM\nsub-03\tF\nsub-04\tM\n"
    (tmp_path / "participants.tsv").write_text(table)
    bids = ["cohort", "--bids", str(tmp_path), "--label", "sex"]
    assert main([*bids, "--mask", "derivatives/masks/sub-{sub}_mask.nii.gz"]) == 0
    assert "4 subjects" in capsys.readouterr().out
    c = cohort_from_bids(
        tmp_path,
        "sub-*/anat/*_T1w.nii.gz",
        label="sex",
        mask_pattern="derivatives/masks/sub-{sub}_mask.nii.gz",
    )
    assert c.subjects[2].mask == tmp_path / "derivatives/masks/sub-03_mask.nii.gz"
    # a mask that is a column name, or several modalities, cannot be honoured: refused, not dropped
    assert main([*bids, "--mask", "brainmask"]) == 2
    assert "{sub}" in capsys.readouterr().err
    assert main([*bids, "--images", "t1,flair"]) == 2
    assert "one modality" in capsys.readouterr().err
    # a participant with two rows would give a bogus label: refused, naming the participant
    (tmp_path / "participants.tsv").write_text(table + "sub-02\tF\n")
    assert main(bids) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sub-02 have more than one row" in err
