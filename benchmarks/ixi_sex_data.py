"""IXI sex benchmark (`benchmarks/ixi_sex.py`): its paths and its data stage.

- ``prepare_data``: grey- and white-matter maps from each subject's DLMUSE segmentation (derived
  regions 601 = all grey matter, 604 = all white matter of ``muse_derived_regions.csv``), registered
  with the T1's transform (the same seeded registration as the T1 cohort) and resampled linearly
  (partial-volume fractions), 3 mm; on request the T1 cohort at 1.5 mm for S2's models.
- ``prepare_rigid``, ``size_cue``, ``run_rigid_baselines``: the T1 cohort registered rigidly (head
  size kept), how much head size alone tells the sexes apart, and the baselines on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work" / "ixi_sex"
BASE = ROOT / "benchmarks" / "_work" / "baselines"
SPLITS = BASE / "splits.tsv"
T1_CACHE = ROOT / "benchmarks" / "_work" / "ixi_3mm"
RIGID_CACHE = ROOT / "benchmarks" / "_work" / "ixi_3mm_rigid"  # rigid registration: head size kept
TISSUE_CACHE = WORK / "tissue_3mm"
PIF_CACHE = WORK / "t1_1p5mm"
IXI = ROOT.parent / "shared" / "data" / "ixi"
JHU = ROOT.parent / "shared" / "data" / "atlases" / "JHU_space-MNI152NLin6_res-2x2x2"


def tissue_maps(out: Path) -> Path:
    """Grey- and white-matter maps from DLMUSE, one NIfTI per subject; returns the cohort table."""
    import nibabel as nib
    import pandas as pd

    derived = {
        int(row[0]): [int(v) for v in row[2:] if v.strip()]
        for row in (line.split(",") for line in (IXI / "muse_derived_regions.csv").read_text().splitlines())
        if row and row[0].strip().isdigit()
    }
    people = pd.read_csv(IXI / "participants.csv")
    table = out / "participants.csv"
    if table.exists() and len(pd.read_csv(table)) == len(people):
        return table

    gm, wm = np.array(derived[601]), np.array(derived[604])  # all grey matter, all white matter
    (out / "gm").mkdir(parents=True, exist_ok=True)
    (out / "wm").mkdir(parents=True, exist_ok=True)
    rows = []
    for _, p in people.iterrows():
        seg_path = IXI / p["dlmuse"]
        seg = nib.load(seg_path)
        labels = np.asarray(seg.dataobj).astype(np.int32)
        paths = {}
        for name, codes in (("gm", gm), ("wm", wm)):
            path = out / name / f"{p['participant_id']}_{name}.nii.gz"
            if not path.exists():
                img = nib.Nifti1Image(np.isin(labels, codes).astype(np.float32), seg.affine)
                nib.save(img, path)
            paths[name] = str(path)
        rows.append({**p.to_dict(), "t1": str(IXI / p["t1"]), **paths, "mask": str(seg_path)})
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def prepare_data(pif: bool) -> None:
    from neurocnn.data.cache import open_cache
    from neurocnn.data.cohort import read_cohort
    from neurocnn.data.prepare import prepare_cohort
    from neurocnn.data.preprocess import PrepareParams

    if not (T1_CACHE / "cache.json").exists():
        raise SystemExit(f"{T1_CACHE} is missing: run benchmarks/baselines_ixi.py first (it prepares IXI)")
    table = tissue_maps(WORK / "tissue_maps")
    # Registration is computed on the first image (T1) and applied to the tissue maps.
    cohort = read_cohort(
        table, images=["t1", "gm", "wm"], label="sex", covariates=["age"], mask="mask", require_labels=False
    )
    params = PrepareParams(voxel_size=3.0, registration=True, normalise="none", clip_percentiles=None)
    staged = WORK / "tissue_3mm_with_t1"
    prepare_cohort(cohort, staged, params, jobs=2, progress=True)
    _drop_first_modality(staged, TISSUE_CACHE)
    t1, tissue = open_cache(T1_CACHE).manifest, open_cache(TISSUE_CACHE).manifest
    if list(t1["participant_id"]) != list(tissue["participant_id"]):
        raise SystemExit("the tissue cohort's subjects are not in the T1 cohort's order")
    if pif:
        t1_cohort = read_cohort(
            IXI / "participants.csv", images=["t1"], label="sex", mask="dlmuse", require_labels=False
        )
        prepare_cohort(
            t1_cohort, PIF_CACHE, PrepareParams(voxel_size=1.5, registration=True), jobs=2, progress=True
        )


def _drop_first_modality(src: Path, dst: Path) -> None:
    """A cache holding only the tissue channels of ``src`` (T1 was there for the registration)."""
    import shutil

    from neurocnn.data.cache import open_cache

    if (dst / "cache.json").exists() and (dst / "cache.json").stat().st_mtime >= (
        src / "cache.json"
    ).stat().st_mtime:
        return
    cache = open_cache(src)
    partial = dst.with_name(dst.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    np.save(partial / "data.npy", np.ascontiguousarray(cache.array()[:, 1:]))
    for name in ("affines.npy", "manifest.tsv"):
        shutil.copy2(src / name, partial / name)
    info = dict(cache.info)
    info["modalities"] = cache.modalities[1:]
    info["shape"] = [cache.shape[0], cache.shape[1] - 1, *cache.shape[2:]]
    (partial / "cache.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(dst, ignore_errors=True)
    partial.rename(dst)


def prepare_rigid() -> None:
    """The T1 cohort again with a rigid registration: brains keep their size (a strong sex cue)."""
    from neurocnn.data.cohort import read_cohort
    from neurocnn.data.prepare import prepare_cohort
    from neurocnn.data.preprocess import PrepareParams

    cohort = read_cohort(
        IXI / "participants.csv", images=["t1"], label="sex", covariates=["age"], mask="dlmuse",
        require_labels=False,
    )  # fmt: skip
    params = PrepareParams(voxel_size=3.0, registration=True, transform="Rigid")
    prepare_cohort(cohort, RIGID_CACHE, params, jobs=2, progress=True)


def size_cue() -> None:
    """Per cohort: brain voxels on the faces of the box, and how well the brain-voxel count alone
    separates the sexes (AUC) — what the affine registration removes and the rigid one keeps."""
    from sklearn.metrics import roc_auc_score

    from neurocnn.data.cache import open_cache

    print("| cohort | brain voxels on the box's faces | AUC of the brain-voxel count (M vs F) |")
    print("|---|---:|---:|")
    for cache in (T1_CACHE, RIGID_CACHE):
        c = open_cache(cache)
        brain = np.asarray(c.array())[:, 0] != 0
        faces = sum(int(np.take(brain, [0, -1], axis=a).sum()) for a in (1, 2, 3))
        count, y = brain.reshape(len(brain), -1).sum(1), c.labels()
        known = y >= 0
        print(f"| {cache.name} | {faces} | {roc_auc_score(y[known], count[known]):.3f} |")


def run_rigid_baselines() -> None:
    """Baselines for the rigid cohort, on the same splits: head size alone, and the voxel SVM."""
    from neurocnn.baselines import CVOptions, run_regional, run_svm

    size_cue()

    def options(**kw: Any) -> CVOptions:
        return CVOptions(splits=SPLITS, n_jobs=2, save_models=False, progress=True, **kw)

    out = WORK / "baselines"
    if not (out / "icv_lr" / "summary.json").exists():
        # intracranial volume (DLMUSE label 702) as the only feature
        table = IXI / "regional_volumes.csv"
        run_regional(RIGID_CACHE, out / "icv_lr", options(), models=["lr"], table=table, columns=["702"])
    if not (out / "svm_voxels_rigid" / "summary.json").exists():
        run_svm(RIGID_CACHE, out / "svm_voxels_rigid", options())
