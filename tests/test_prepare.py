"""Preparation and the cache: content, reuse, invalidation, resume, refusal to clobber."""

from __future__ import annotations

import dataclasses
import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from neurocnn.data.cache import open_cache
from neurocnn.data.cohort import read_cohort
from neurocnn.data.dataset import CachedDataset
from neurocnn.data.prepare import prepare_cohort
from neurocnn.data.preprocess import PrepareParams, mni_grid
from neurocnn.errors import NeuroCNNError

PARAMS = PrepareParams(voxel_size=5.0, shape=(10, 12, 10))
SHAPE_OF_MAKE_COHORT = (14, 16, 12)


def _cohort(table, **kw):  # type: ignore[no-untyped-def]
    return read_cohort(table, images=["gm", "wm"], label="diagnosis", mask="mask", covariates=["age"], **kw)


def test_mni_grids_match_the_seeds():
    assert mni_grid(3.0).shape == (61, 73, 61)
    assert mni_grid(1.5).shape == (121, 145, 121)
    assert mni_grid(2.0).shape == (91, 109, 91)
    np.testing.assert_allclose(mni_grid(3.0).affine[:3, 3], [-90, -126, -72])


def test_prepare_writes_a_complete_cache(make_cohort, tmp_path):
    table = make_cohort(6)
    out = tmp_path / "cache"
    r = prepare_cohort(_cohort(table), out, PARAMS, jobs=2, progress=False)
    assert not r.reused and r.prepared == 6
    cache = open_cache(out)
    assert cache.shape == (6, 2, 10, 12, 10)
    data = cache.array()
    assert isinstance(data, np.memmap)
    brain = data[0, 0] != 0
    # z-scored within the brain mask, background exactly zero
    assert abs(float(data[0, 0][brain].mean())) < 1e-4
    assert abs(float(data[0, 0][brain].std()) - 1) < 1e-3
    assert list(cache.manifest["participant_id"]) == [f"sub-{i:03d}" for i in range(6)]
    assert list(cache.labels()) == [0, 1, 0, 1, 0, 1]
    info = json.loads((out / "cache.json").read_text())
    assert info["params"]["voxel_size"] == 5.0 and info["neurocnn_version"]
    assert len(info["inputs"]) == 18 and all(len(v["sha256"]) == 64 for v in info["inputs"].values())
    assert not (tmp_path / "cache.partial").exists()


def test_reorients_to_ras(tmp_path, make_cohort):
    table = make_cohort(2, modalities=("gm",), mask=False)
    # the same data stored left-right flipped with a flipped affine is the same image
    path = table.parent / "gm/sub-001_gm.nii.gz"
    img0 = nib.load(str(table.parent / "gm/sub-000_gm.nii.gz"))
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = img0.shape[0] - 1
    nib.save(nib.Nifti1Image(np.asarray(img0.dataobj)[::-1].copy(), img0.affine @ flip), str(path))
    c = read_cohort(table, images=["gm"], label="diagnosis")
    params = PrepareParams(normalise="none", clip_percentiles=None)
    prepare_cohort(c, tmp_path / "c", params, jobs=1, progress=False)
    data = open_cache(tmp_path / "c").array()
    np.testing.assert_allclose(data[0], data[1], atol=1e-5)


def test_unchanged_cohort_is_reused_and_changes_invalidate(make_cohort, tmp_path):
    table = make_cohort(4)
    out = tmp_path / "cache"
    prepare_cohort(_cohort(table), out, PARAMS, jobs=1, progress=False)
    assert prepare_cohort(_cohort(table), out, PARAMS, jobs=1, progress=False).reused
    # touching a file without changing it keeps the cache
    f = table.parent / "gm/sub-001_gm.nii.gz"
    os.utime(f, ns=(0, 0))
    assert prepare_cohort(_cohort(table), out, PARAMS, jobs=1, progress=False).reused
    # a changed parameter invalidates it (replacing it takes overwrite: runs were trained on it)
    other = PARAMS.model_copy(update={"normalise": "minmax"})
    r = prepare_cohort(_cohort(table), out, other, jobs=1, progress=False, overwrite=True)
    assert not r.reused and r.prepared == 4
    assert float(open_cache(out).array()[0].max()) <= 1.0
    # a changed input file invalidates it: the same table's updated scan, prepared again unasked
    img = nib.load(str(f))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 2 + 1, img.affine), str(f))
    r = prepare_cohort(_cohort(table), out, other, jobs=1, progress=False)
    assert not r.reused and r.changed_files == (str(f),)
    assert prepare_cohort(_cohort(table), out, other, jobs=1, progress=False).reused


def test_a_cache_of_other_parameters_or_another_cohort_is_replaced_only_with_overwrite(make_cohort, tmp_path):
    table = make_cohort(6)
    out = tmp_path / "cache"
    prepare_cohort(_cohort(table), out, PARAMS, jobs=1, progress=False)
    before = (out / "data.npy").read_bytes()
    minmax = PARAMS.model_copy(update={"normalise": "minmax"})
    with pytest.raises(NeuroCNNError, match=r"normalise 'zscore' there, 'minmax' now.*--overwrite"):
        prepare_cohort(_cohort(table), out, minmax, jobs=1, progress=False)
    # a smaller table (subjects left out), and the same subjects relabelled
    fewer = tmp_path / "fewer.tsv"
    fewer.write_text("".join(table.read_text().splitlines(keepends=True)[:4]))
    with pytest.raises(NeuroCNNError, match=r"6 subjects there, 3 now, 3 left out \(e.g. sub-003\)"):
        prepare_cohort(_cohort(fewer), out, PARAMS, jobs=1, progress=False)
    relabelled = tmp_path / "relabelled.tsv"
    relabelled.write_text(table.read_text().replace("control", "healthy"))
    with pytest.raises(NeuroCNNError, match=r"labels of 3 subject\(s\) \(sub-000: 'control' there"):
        prepare_cohort(_cohort(relabelled), out, PARAMS, jobs=1, progress=False)
    assert (out / "data.npy").read_bytes() == before and not (tmp_path / "cache.partial").exists()
    assert prepare_cohort(_cohort(table), out, PARAMS, jobs=1, progress=False).reused
    r = prepare_cohort(_cohort(fewer), out, PARAMS, jobs=1, progress=False, overwrite=True)
    assert r.cache.shape[0] == 3


def test_interrupted_prepare_resumes_and_never_looks_complete(make_cohort, tmp_path):
    table = make_cohort(6)
    out = tmp_path / "cache"
    victim = table.parent / "wm/sub-004_wm.nii.gz"
    good = victim.read_bytes()
    victim.write_bytes(good[:100])
    with pytest.raises(NeuroCNNError, match="1 subject.*could not be prepared") as info:
        prepare_cohort(_cohort(table), out, PARAMS, jobs=2, progress=False, validate=False)
    assert "sub-004" in str(info.value)
    assert not out.exists(), "no cache may appear when a subject failed"
    victim.write_bytes(good)
    r = prepare_cohort(_cohort(table), out, PARAMS, jobs=2, progress=False)
    assert (r.prepared, r.resumed) == (1, 5)
    fresh = prepare_cohort(_cohort(table), tmp_path / "fresh", PARAMS, jobs=1, progress=False)
    np.testing.assert_array_equal(open_cache(out).array(), fresh.cache.array())


def test_failed_assembly_resumes_and_leaves_no_stale_arrays(make_cohort, tmp_path, monkeypatch):
    import neurocnn.data.prepare as prep

    table = make_cohort(4)
    out = tmp_path / "cache"
    real = prep.write_cache

    def disk_full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("No space left on device")

    monkeypatch.setattr(prep, "write_cache", disk_full)
    with pytest.raises(OSError):
        prepare_cohort(_cohort(table), out, PARAMS, jobs=1, progress=False)
    assert not out.exists()
    # arrays of other settings, left in the partial folder by an earlier attempt
    stale = tmp_path / "cache.partial" / "subjects" / "other-settings.npy"
    np.save(stale, np.zeros(3))
    monkeypatch.setattr(prep, "write_cache", real)
    r = prepare_cohort(_cohort(table), out, PARAMS, jobs=1, progress=False)
    assert (r.prepared, r.resumed) == (0, 4), "every subject is reused, affines included"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["affines.npy", "data.npy", "manifest.tsv", "cache.json"]
    )
    assert not (tmp_path / "cache.partial").exists()
    fresh = prepare_cohort(_cohort(table), tmp_path / "fresh", PARAMS, jobs=1, progress=False)
    np.testing.assert_array_equal(r.cache.array(), fresh.cache.array())
    np.testing.assert_array_equal(r.cache.affines(), fresh.cache.affines())


def test_refuses_to_overwrite_a_folder_that_is_not_a_cache(make_cohort, tmp_path):
    table = make_cohort(2)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(NeuroCNNError, match="not a neurocnn cache"):
        prepare_cohort(_cohort(table), out, PARAMS, jobs=1, progress=False)
    assert (out / "notes.txt").read_text() == "precious"


def test_invalid_cohort_writes_nothing(make_cohort, tmp_path):
    table = make_cohort(4)
    (table.parent / "gm/sub-002_gm.nii.gz").unlink()
    with pytest.raises(NeuroCNNError, match="sub-002 \\[gm\\]"):
        prepare_cohort(_cohort(table), tmp_path / "c", PARAMS, jobs=1, progress=False)
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.partial").exists()


def test_float16_storage_and_dataset(make_cohort, tmp_path):
    table = make_cohort(6)
    params = PARAMS.model_copy(update={"dtype": "float16"})
    cache = prepare_cohort(_cohort(table), tmp_path / "c", params, jobs=1, progress=False).cache
    assert cache.array().dtype == np.float16
    ds = CachedDataset(tmp_path / "c", indices=[1, 3, 5])
    x, y, idx = ds[1]
    assert x.dtype == torch.float32 and x.shape == (2, 10, 12, 10) and (y, idx) == (1, 3)
    multi, _, _ = CachedDataset(cache, [0], split_modalities=True)[0]
    assert len(multi) == 2 and multi[1].shape == (1, 10, 12, 10)
    loader = DataLoader(ds, batch_size=2, num_workers=2)
    seen = torch.cat([b[2] for b in loader])
    assert sorted(seen.tolist()) == [1, 3, 5]


def test_a_template_file_is_part_of_the_cache_identity(make_cohort, tmp_path):
    from neurocnn.data.prepare import _spec_hash, _template_digest

    cohort = _cohort(make_cohort(2))
    template = tmp_path / "template.nii.gz"
    template.write_bytes(b"first template")
    params = PARAMS.model_copy(update={"registration": True, "template": str(template)})
    first = _spec_hash(cohort, params, _template_digest(params))
    template.write_bytes(b"edited template")  # same path, other contents: the arrays are stale
    assert _spec_hash(cohort, params, _template_digest(params)) != first
    # the built-in template keeps the hash that earlier caches were written with
    assert _template_digest(PARAMS.model_copy(update={"registration": True})) == ""
    template.unlink()
    with pytest.raises(NeuroCNNError, match="template .* not found"):
        prepare_cohort(cohort, tmp_path / "cache", params, jobs=1, progress=False)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "cache.partial").exists()


def test_a_seeded_registration_is_the_same_on_every_run(make_cohort, tmp_path):
    """ANTs samples its metric at random points, clock-seeded unless told: without the seed (and
    one thread) preparing IXI twice gave different arrays and moved every benchmark by ±0.02."""
    from conftest import save

    # a smooth ellipsoid template on a larger field of view than the subjects' noisy blobs
    axes = np.meshgrid(*[np.linspace(-1.2, 1.2, s) for s in (20, 24, 18)], indexing="ij")
    template = np.exp(-sum((a / r) ** 2 for a, r in zip(axes, (0.7, 0.8, 0.6), strict=True)))
    template_path = save(tmp_path / "template.nii.gz", template.astype(np.float32))
    cohort = _cohort(make_cohort(2))
    params = PARAMS.model_copy(update={"registration": True, "template": str(template_path)})

    def prepared(name: str, p: PrepareParams) -> np.ndarray:
        return prepare_cohort(cohort, tmp_path / name, p, jobs=2, progress=False).cache.array()

    first, again = prepared("a", params), prepared("b", params)
    np.testing.assert_array_equal(first, again)
    other_seed = prepared("c", params.model_copy(update={"registration_seed": 2}))
    assert not np.array_equal(first, other_seed)  # the seed reaches ANTs
    with pytest.raises(ValueError, match="registration_seed"):
        PrepareParams(registration=True, registration_seed=0)


def test_an_empty_cohort_is_refused_and_leaves_nothing(tmp_path):
    table = tmp_path / "participants.tsv"
    table.write_text("participant_id\tgm\tdiagnosis\n")
    cohort = read_cohort(table, images=["gm"], label="diagnosis")
    with pytest.raises(NeuroCNNError, match="no subjects"):
        prepare_cohort(cohort, tmp_path / "c", PARAMS, jobs=1, progress=False)
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.partial").exists()


def test_oblique_scans_keep_their_voxel_size():
    from neurocnn.data.preprocess import centred_grid

    turn = np.radians(30)
    aff = np.eye(4)
    aff[:2, :2] = [[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]
    aff[:3, :3] *= 2.0  # 2 mm voxels, rotated 30° about z
    grid = centred_grid(nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), aff), None, None)
    np.testing.assert_allclose(np.diag(grid.affine)[:3], [2.0, 2.0, 2.0])


def test_mixed_native_voxel_sizes_need_a_voxel_size(make_cohort, tmp_path):
    from conftest import affine, blob, save

    table = make_cohort(4, modalities=("gm",), mask=False)
    odd = save(table.parent / "gm/sub-002_gm.nii.gz", blob(np.random.default_rng(5)), affine(3.0))
    cohort = read_cohort(table, images=["gm"], label="diagnosis")
    with pytest.raises(NeuroCNNError, match="--voxel-size") as info:
        prepare_cohort(cohort, tmp_path / "c", PrepareParams(), jobs=1, progress=False)
    assert f"sub-002 [gm] {odd}: voxels 3×3×3 mm, most subjects' are 4×4×4 mm" in str(info.value)
    assert "sub-001" not in str(info.value)
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.partial").exists()
    params = PrepareParams(voxel_size=4.0, shape=(14, 16, 12))
    cache = prepare_cohort(cohort, tmp_path / "c", params, jobs=1, progress=False).cache
    assert np.allclose([np.diag(a)[:3] for a in cache.affines()], 4.0)


def test_float16_overflow_and_an_empty_channel_fail_their_subject(make_cohort, tmp_path):
    from conftest import blob, save

    table = make_cohort(3)
    save(table.parent / "gm/sub-001_gm.nii.gz", blob(np.random.default_rng(1)) * 1e6)
    params = PARAMS.model_copy(update={"normalise": "none", "clip_percentiles": None, "dtype": "float16"})
    with pytest.raises(NeuroCNNError, match="1 subject.*could not be prepared") as info:
        prepare_cohort(_cohort(table), tmp_path / "c", params, jobs=1, progress=False)
    msg = str(info.value)
    assert "sub-001" in msg and "gm file" in msg and "sub-001_gm.nii.gz" in msg and "Inf or NaN" in msg
    assert "float32" in msg and not (tmp_path / "c").exists()
    # a brain mask that does not overlap the brain in the image: nothing of the scan is left
    table = make_cohort(3, seed=1)
    corner = np.zeros(blob(np.random.default_rng(0)).shape, np.uint8)
    corner[:2, :2, :2] = 1  # the blob is zero in the corners
    save(table.parent / "mask/sub-002_mask.nii.gz", corner)
    with pytest.raises(NeuroCNNError, match="1 subject.*could not be prepared") as info:
        prepare_cohort(_cohort(table), tmp_path / "d", PARAMS, jobs=1, progress=False)
    assert "sub-002" in str(info.value) and "all zero" in str(info.value)
    assert not (tmp_path / "d").exists()


def test_a_copied_scan_under_two_participants_is_refused(make_cohort, tmp_path):
    table = make_cohort(3)
    root = table.parent
    (root / "wm/sub-002_wm.nii.gz").write_bytes((root / "wm/sub-000_wm.nii.gz").read_bytes())
    with pytest.raises(NeuroCNNError, match="more than one participant") as info:
        prepare_cohort(_cohort(table), tmp_path / "c", PARAMS, jobs=1, progress=False)
    assert "sub-000 [wm]" in str(info.value) and "sub-002 [wm]" in str(info.value)
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.partial").exists()


@pytest.mark.parametrize("voxel_size", [None, 5.0])
def test_the_native_grid_is_known_from_the_header(make_cohort, tmp_path, voxel_size):
    """`predict` refuses scans on another grid before preparing them: the header must say the shape
    that preparation gives, also for a scan stored with its axes permuted and flipped."""
    from neurocnn.data.cohort_checks import native_grid_shape

    table = make_cohort(2, modalities=("gm",), mask=False)
    path = table.parent / "gm/sub-001_gm.nii.gz"
    img = nib.load(str(path))
    swap = np.array([[0, -1, 0, 15], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    data = np.transpose(np.asarray(img.dataobj), (2, 0, 1))[:, ::-1]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), img.affine @ np.linalg.inv(swap)), str(path))
    params = PrepareParams(voxel_size=voxel_size, normalise="none", clip_percentiles=None)
    cohort = read_cohort(table, images=["gm"], require_labels=False)
    assert nib.load(str(path)).shape != SHAPE_OF_MAKE_COHORT  # stored in another axis order
    for i, subject in enumerate(cohort.subjects):
        one = dataclasses.replace(cohort, subjects=(subject,))
        cache = prepare_cohort(one, tmp_path / f"c{i}", params, jobs=1, progress=False).cache
        assert native_grid_shape(subject.images["gm"], voxel_size) == tuple(cache.shape[2:])
