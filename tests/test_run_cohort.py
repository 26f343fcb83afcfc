"""`neurocnn predict` and `neurocnn evaluate` refuse scans the fold models must not see (masked
differently, other voxel sizes, missing files) and never replace a user's file; fast: the run folder
is only its data.json and the fold models' predictions are stood in for."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neurocnn.commands import _run_cohort, evaluate, predict
from neurocnn.data.cache import open_cache
from neurocnn.data.cohort import read_cohort
from neurocnn.errors import NeuroCNNError
from neurocnn.evaluation import ensemble
from neurocnn.evaluation.predict import cohort_from_scans, leakage
from neurocnn.training.crossval import data_record
from neurocnn.training.runfolder import RunFolder
from training_fixtures import write_cache


def parse(module, argv):  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())
    return parser.parse_args(argv)


def fake_run(path: Path, **data: object) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    record = {"modalities": ["gm"], "participants": [], "input_sha256": [], **data}
    (path / "data.json").write_text(json.dumps(record))
    return path


def run_of(cache_path: Path, path: Path) -> Path:
    """A run 'trained' on the cache: its data.json as `neurocnn cv` writes it, without participants
    (so that the cache itself is not flagged as leakage)."""
    record = data_record(open_cache(cache_path))
    return fake_run(path, **{**record, "participants": [], "input_sha256": []})


def stand_in_predictions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fold models' predictions replaced by a fixed 0.7/0.3 for every subject."""

    def fake(run_dir, cache, **kwargs):  # type: ignore[no-untyped-def]
        m = cache.manifest
        table = pd.DataFrame({"participant_id": m["participant_id"], "session_id": None, "index": m["index"]})
        if m["label"].notna().any():
            table["label"] = m["label"].to_numpy()
        for c, p in zip(cache.classes, (0.7, 0.3), strict=True):
            table[f"prob_{c}"] = p
        table["prediction"] = table["vote"] = cache.classes[0]
        table["n_models"] = 1
        per = table.drop(columns=["label", "vote", "n_models"], errors="ignore")
        per.insert(3, "model", "r0_f0")
        return table, per

    monkeypatch.setattr(ensemble, "ensemble_predictions", fake)


def test_data_json_records_masking_and_voxel_size(tmp_path):
    cache = write_cache(tmp_path / "cache")
    record = data_record(open_cache(cache))
    assert record["masked"] is False and record["voxel_size"] == [3.0, 3.0, 3.0]
    info = json.loads((cache / "cache.json").read_text())
    info["subject_files"] = [{**f, "mask": "/data/mask.nii.gz"} for f in info["subject_files"]]
    info["mask_column"] = "brainmask"
    (cache / "cache.json").write_text(json.dumps(info))
    record = data_record(open_cache(cache))
    assert record["masked"] is True and record["mask_column"] == "brainmask"


def test_a_masking_mismatch_is_refused_both_ways(make_cohort, tmp_path):
    table = make_cohort(4, modalities=("gm",), mask=True)
    masked = fake_run(tmp_path / "masked", masked=True, mask_column="dlmuse", params={"voxel_size": 3.0})
    with pytest.raises(NeuroCNNError, match=r"brain mask \(mask 'dlmuse'\).*give --mask COLUMN"):
        predict.run(parse(predict, ["predict", str(masked), "--cohort", str(table)]))
    with pytest.raises(NeuroCNNError, match="brain mask.*--cohort table with a brain-mask column"):
        predict.run(parse(predict, ["predict", str(masked), str(table.parent / "gm/sub-000_gm.nii.gz")]))
    argv = ["evaluate", str(masked), "--cohort", str(table), "--label", "diagnosis"]
    with pytest.raises(NeuroCNNError, match="brain mask.*give --mask COLUMN"):
        evaluate.run(parse(evaluate, argv))
    # trained without masks, new scans given with --mask
    plain = fake_run(tmp_path / "plain", masked=False, params={"voxel_size": 4.0})
    with pytest.raises(NeuroCNNError, match="without a brain mask.*with one; drop --mask"):
        predict.run(parse(predict, ["predict", str(plain), "--cohort", str(table), "--mask", "mask"]))
    # a prepared cohort (--cache) is checked too
    cache = write_cache(tmp_path / "cache")
    with pytest.raises(NeuroCNNError, match="cache was prepared without one"):
        predict.run(parse(predict, ["predict", str(masked), "--cache", str(cache)]))
    assert not (masked / "prepared").exists() and not (plain / "prepared").exists()


def test_an_older_run_is_checked_by_its_training_cache_or_not_at_all(make_cohort, tmp_path):
    cohort = read_cohort(make_cohort(2, modalities=("gm",), mask=False), images=["gm"], require_labels=False)
    cache = write_cache(tmp_path / "cache")
    info = json.loads((cache / "cache.json").read_text())
    info["subject_files"] = [{**f, "mask": "/data/mask.nii.gz"} for f in info["subject_files"]]
    (cache / "cache.json").write_text(json.dumps(info))
    old = RunFolder(fake_run(tmp_path / "old", cache=str(cache)))  # no "masked" in data.json
    with pytest.raises(NeuroCNNError, match="brain mask"):
        _run_cohort.check_mask(old, cohort)
    moved = RunFolder(fake_run(tmp_path / "moved", cache=str(tmp_path / "gone")))
    _run_cohort.check_mask(moved, cohort)  # unknown: nothing to say


def test_a_prepared_cohort_on_other_voxels_is_refused(tmp_path):
    cache = open_cache(write_cache(tmp_path / "cache"))  # 3 mm
    data = data_record(cache)
    ensemble.check_compatible(data, cache)
    two_mm = np.diag([2.0, 2.0, 2.0, 1.0]).tolist()
    with pytest.raises(
        NeuroCNNError, match=r"voxels of 3×3×3 mm \(30 subject\(s\), e.g. sub-000\).*2×2×2 mm"
    ):
        ensemble.check_compatible({**data, "voxel_size": [2.0, 2.0, 2.0]}, cache)
    older = {k: v for k, v in data.items() if k != "voxel_size"}  # a run from before voxel_size
    with pytest.raises(NeuroCNNError, match="trained on 2×2×2 mm"):
        ensemble.check_compatible({**older, "affine": two_mm}, cache)
    ensemble.check_compatible({**older, "affine": None}, cache)  # unknown: not refused


def test_new_scans_for_a_run_trained_at_native_resolution_must_share_it(make_cohort, tmp_path):
    table = make_cohort(2, modalities=("gm",), mask=False)  # 4 mm voxels
    run = fake_run(tmp_path / "run", masked=False, params={"normalise": "zscore"}, voxel_size=[3.0, 3.0, 3.0])
    with pytest.raises(NeuroCNNError, match="trained on scans of 3×3×3 mm") as info:
        predict.run(parse(predict, ["predict", str(run), "--cohort", str(table)]))
    assert "sub-001 [gm]" in str(info.value) and "voxels 4×4×4 mm" in str(info.value)
    assert not (run / "prepared").exists()


def test_predict_never_replaces_a_file_unless_told(tmp_path, monkeypatch):
    cache = write_cache(tmp_path / "cache")
    run = run_of(cache, tmp_path / "run")
    stand_in_predictions(monkeypatch)
    out = tmp_path / "participants.tsv"
    out.write_text("participant_id\tdiagnosis\nsub-000\tpatient\n")
    argv = ["predict", str(run), "--cache", str(cache), "--out", str(out)]
    with pytest.raises(NeuroCNNError, match="participants.tsv exists.*--overwrite"):
        predict.run(parse(predict, argv))
    assert out.read_text() == "participant_id\tdiagnosis\nsub-000\tpatient\n"
    assert predict.run(parse(predict, [*argv, "--overwrite"])) == 0
    assert len(pd.read_csv(out)) == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "participants.tsv", "run"]


def test_missing_files_and_folders_given_as_scans_are_named(make_cohort, tmp_path):
    table = make_cohort(3, modalities=("gm",), mask=False)
    run = RunFolder(fake_run(tmp_path / "run"))
    gone, folder = table.parent / "gm/sub-001_gm.nii.gz", table.parent / "gm/sub-002_gm.nii.gz"
    gone.unlink()
    folder.unlink()
    folder.mkdir()
    cohort = read_cohort(table, images=["gm"], require_labels=False)
    with pytest.raises(NeuroCNNError, match="2 image file") as info:
        leakage(run, cohort)
    assert f"sub-001 [gm] {gone}: file not found" in str(info.value)
    assert f"sub-002 [gm] {folder}: a folder" in str(info.value)
    with pytest.raises(NeuroCNNError, match="is a folder, not a NIfTI file"):
        cohort_from_scans([folder], "gm")


def test_evaluate_says_how_many_unlabelled_subjects_it_left_out(tmp_path, monkeypatch, capsys):
    cache = write_cache(tmp_path / "cache")
    run = run_of(cache, tmp_path / "run")
    manifest = pd.read_csv(cache / "manifest.tsv", sep="\t")
    manifest.loc[[2, 5], ["label", "label_index"]] = [np.nan, -1]
    manifest.to_csv(cache / "manifest.tsv", sep="\t", index=False)
    stand_in_predictions(monkeypatch)
    assert evaluate.run(parse(evaluate, ["evaluate", str(run), "--cache", str(cache)])) == 0
    assert "2 subject(s) of" in capsys.readouterr().err
    metrics = json.loads((run / "evaluations" / "cache" / "metrics.json").read_text())
    assert metrics["n_unlabelled"] == 2 and metrics["n_subjects"] == 28


def test_scans_on_another_grid_are_named_before_anything_is_prepared(make_cohort, tmp_path):
    table = make_cohort(2, modalities=("gm",), mask=False)  # 14×16×12 at 4 mm
    scan = table.parent / "gm/sub-001_gm.nii.gz"
    params = {"normalise": "zscore", "clip_percentiles": None}
    run = fake_run(
        tmp_path / "run", masked=False, params=params, voxel_size=[4.0] * 3, shape=[9, 1, 10, 16, 12]
    )
    with pytest.raises(NeuroCNNError) as info:
        predict.run(parse(predict, ["predict", str(run), str(scan)]))
    said = str(info.value)
    assert "trained on a 10×16×12 grid, prepared without --shape" in said and "--shape" in said
    assert f"sub-001 [gm] {scan}: grid 14×16×12" in said and "evaluate RUN" not in said
    assert not (run / "prepared").exists()


def test_a_failed_prediction_removes_only_the_folder_it_prepared(make_cohort, tmp_path):
    table = make_cohort(2, modalities=("gm",), mask=False)
    scan = table.parent / "gm/sub-001_gm.nii.gz"
    params = {"normalise": "zscore", "clip_percentiles": None}
    run = fake_run(
        tmp_path / "run",
        masked=False,
        params=params,
        voxel_size=[4.0] * 3,
        shape=[9, 1, 14, 16, 12],
        classes=["control", "patient"],
    )
    earlier = run / "prepared" / "participants-0123456789"
    earlier.mkdir(parents=True)
    # prepared fine, then no fold model to apply (this fake run has none)
    with pytest.raises(NeuroCNNError, match="config.yaml"):
        predict.run(parse(predict, ["predict", str(run), str(scan), "--no-progress", "--jobs", "1"]))
    assert [p.name for p in (run / "prepared").iterdir()] == ["participants-0123456789"]
    earlier.rmdir()
    (run / "prepared").rmdir()
    with pytest.raises(NeuroCNNError, match="config.yaml"):
        predict.run(parse(predict, ["predict", str(run), str(scan), "--no-progress", "--jobs", "1"]))
    assert not (run / "prepared").exists()


def test_a_baseline_run_is_refused_up_front(make_cohort, tmp_path):
    table = make_cohort(2, modalities=("gm",), mask=False)
    run = fake_run(tmp_path / "svm", masked=False, params={"normalise": "zscore"})
    (run / "config.yaml").write_text("kind: baseline\nbaseline: svm\n")
    scan = str(table.parent / "gm/sub-001_gm.nii.gz")
    with pytest.raises(NeuroCNNError, match=r"svm is a baseline run \(neurocnn baseline\); predict/evaluate"):
        predict.run(parse(predict, ["predict", str(run), scan]))
    with pytest.raises(NeuroCNNError, match="is a baseline run"):
        evaluate.run(parse(evaluate, ["evaluate", str(run), "--cohort", str(table)]))
    assert not (run / "prepared").exists()


def test_training_scans_warn_and_shared_ids_only_get_a_note(make_cohort, tmp_path, capsys):
    from neurocnn.data.io import file_sha256

    table = make_cohort(3, modalities=("gm",), mask=False)
    scans = [table.parent / f"gm/sub-00{i}_gm.nii.gz" for i in range(3)]
    # sub-000: the very training file; sub-001: the id only (another file); sub-002: new
    trained = fake_run(
        tmp_path / "run", participants=["sub-000", "sub-001"], input_sha256=[file_sha256(scans[0])]
    )
    run = RunFolder(trained)
    cohort = cohort_from_scans(scans, "gm")
    _run_cohort.check_leakage(run, cohort, strict=False)
    err = capsys.readouterr().err
    assert "warning: 1 subject(s) have scans that were in the training data" in err
    assert f"sub-000: gm file {scans[0]} was a training scan" in err
    assert "note: 1 subject(s) have a participant id of the training cohort" in err
    assert "sub-001: participant id sub-001 also in the training cohort" in err and "the same person?" in err
    assert "- sub-002" not in err and err.count("- sub-000:") == 1  # one line per subject
    with pytest.raises(
        NeuroCNNError, match=r"^1 subject\(s\) have scans that were in the training data"
    ) as info:
        _run_cohort.check_leakage(run, cohort, strict=True)
    assert "sub-001" not in str(info.value)
    # --strict does not refuse an id alone (BIDS ids recur across datasets): it is noted
    _run_cohort.check_leakage(run, cohort_from_scans(scans[1:], "gm"), strict=True)
    assert "the same person?" in capsys.readouterr().err


def test_errors_about_given_scans_name_the_scans_not_a_table(make_cohort, tmp_path):
    import nibabel as nib

    table = make_cohort(2, modalities=("gm",), mask=False)
    scan = table.parent / "gm/sub-001_gm.nii.gz"
    img = nib.load(str(scan))
    four_d = tmp_path / "sub-009_gm.nii.gz"
    data = np.stack([np.asarray(img.dataobj)] * 2, axis=-1)
    nib.save(nib.Nifti1Image(data, img.affine), str(four_d))
    params = {"normalise": "zscore", "clip_percentiles": None}
    run = fake_run(
        tmp_path / "run", masked=False, params=params, voxel_size=[4.0] * 3, shape=[9, 1, 14, 16, 12]
    )
    for scans, head in [([four_d], str(four_d)), ([scan, four_d], "the 2 scans given")]:
        with pytest.raises(NeuroCNNError) as info:
            predict.run(parse(predict, ["predict", str(run), *map(str, scans), "--no-progress"]))
        said = str(info.value)
        assert said.startswith(f"{head}: 1 problem(s) found") and "scans.tsv" not in said
        assert f"sub-009 [gm] {four_d}" in said
    assert not (run / "prepared").exists()
