"""New scans through a trained run: prepared exactly as the training cohort was, checked for
leakage, predicted by the ensemble of fold models (`neurocnn predict`, `neurocnn evaluate`).

Preparation reuses `neurocnn.data.prepare.prepare_cohort` with the parameters recorded in the run's
``data.json`` (those of the training cache), into ``RUN/prepared/<name>``; an unchanged cohort is
reused instantly.

Leakage: a participant id or an image file (by sha256) that was in the run's training cohort is
reported; with ``strict`` it is refused. (Every participant of a cross-validated cohort was in the
training set of most fold models, so its predictions would be optimistic.)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neurocnn.data.cache import PreparedCohort
from neurocnn.data.cohort import Cohort, read_cohort
from neurocnn.data.cohort_checks import mm, other_voxel_sizes
from neurocnn.data.io import file_sha256
from neurocnn.data.prepare import prepare_cohort
from neurocnn.data.preprocess import PrepareParams
from neurocnn.errors import NeuroCNNError
from neurocnn.training.runfolder import RunFolder


def cohort_from_scans(scans: Sequence[Path | str], modality: str) -> Cohort:
    """An unlabelled one-modality cohort from image files; the participant id is the file's BIDS
    ``sub-<label>`` entity, or its name without extension."""
    rows = []
    for scan in scans:
        path = Path(scan).resolve()
        if not path.exists():
            raise NeuroCNNError(f"scan {scan} not found")
        if path.is_dir():
            raise NeuroCNNError(f"scan {scan} is a folder, not a NIfTI file; give the image files in it")
        stem = re.sub(r"\.nii(\.gz)?$", "", path.name)
        bids = re.match(r"(sub-[A-Za-z0-9]+)", stem)
        pid = bids.group(1) if bids else stem
        rows.append({"participant_id": pid, modality: str(path)})
    table = pd.DataFrame(rows)
    dupes = table["participant_id"][table["participant_id"].duplicated()].tolist()
    if dupes:
        raise NeuroCNNError(f"several scans are named {dupes[0]}; give a --cohort table with participant ids")
    return read_cohort(Path.cwd() / "scans.tsv", images=[modality], require_labels=False, table=table)


def leakage(run: RunFolder, cohort: Cohort) -> list[str]:
    """Participants and image files of ``cohort`` that were in the run's training cohort.

    Refuses (before hashing anything) image files that are missing, folders or unreadable.
    """
    data = run.data()
    seen_ids = set(data.get("participants", []))
    seen_files = set(data.get("input_sha256", []))
    unusable = [
        f"{s.key} [{m}] {p}: {why}"
        for s in cohort.subjects
        for m, p in s.images.items()
        if (why := _unusable(p))
    ]
    if unusable:
        raise NeuroCNNError(
            f"{cohort.source}: {len(unusable)} image file(s) cannot be read; nothing was written:",
            problems=unusable,
        )
    problems = []
    for s in cohort.subjects:
        if s.participant_id in seen_ids:
            problems.append(f"participant {s.key} was in the training cohort of {run.path}")
        for modality, path in s.images.items():
            if file_sha256(path) in seen_files:
                problems.append(f"{s.key}: {modality} file {path} is a file of the training cohort")
    return problems


def _unusable(path: Path) -> str | None:
    if not path.exists():
        return "file not found; check the path (relative paths are read relative to the table's folder)"
    if path.is_dir():
        return "a folder, not a NIfTI file; give the image file"
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return f"cannot be opened ({exc.strerror}); check its permissions"


def cache_leakage(run: RunFolder, cache: PreparedCohort) -> list[str]:
    """Participants and image files of a prepared cohort that were in the run's training cohort
    (the files by the sha256 recorded when the cohort was prepared)."""
    data = run.data()
    seen_ids = set(data.get("participants", []))
    seen_files = set(data.get("input_sha256", []))
    inputs = cache.info.get("inputs", {})
    problems = []
    keys = cache.manifest["participant_id"].astype(str).tolist()
    files = cache.info.get("subject_files", [{}] * len(keys))
    for pid, subject_files in zip(keys, files, strict=False):
        if pid in seen_ids:
            problems.append(f"participant {pid} was in the training cohort of {run.path}")
        for modality, path in subject_files.items():
            if modality != "mask" and inputs.get(path, {}).get("sha256") in seen_files:
                problems.append(f"{pid}: {modality} file {path} is a file of the training cohort")
    return problems


def check_prepared_alike(run: RunFolder, cache: PreparedCohort) -> None:
    """A prepared cohort must have been prepared with the training cohort's parameters (the fold
    models saw inputs normalised, clipped and resampled that way)."""
    trained = run.data().get("params")
    given = cache.info.get("params")
    if not trained or not given or trained == given:
        return
    keys = sorted(k for k in set(trained) | set(given) if trained.get(k) != given.get(k))
    changed = [f"{k}: {trained.get(k)!r} in training, {given.get(k)!r} here" for k in keys]
    raise NeuroCNNError(
        f"{cache.path} was prepared with other settings than the training cohort of {run.path} "
        f"({'; '.join(changed[:4])}); give --cohort TABLE instead, and it is prepared like the run"
    )


def training_voxel_sizes(data: dict[str, Any]) -> np.ndarray | None:
    """Voxel sizes (mm) of the run's training grid from its data.json; None when not known (an
    older run without ``voxel_size`` falls back on the common affine, when there was one)."""
    from nibabel.affines import voxel_sizes

    if data.get("voxel_size") is not None:
        return np.asarray(data["voxel_size"], dtype=np.float64)
    if data.get("affine") is not None:
        return np.asarray(voxel_sizes(np.asarray(data["affine"], dtype=np.float64)))
    return None


def prepare_like_run(
    run: RunFolder, cohort: Cohort, *, name: str | None = None, jobs: int | None = None, progress: bool = True
) -> PreparedCohort:
    """Prepare ``cohort`` with the run's preparation parameters into ``RUN/prepared/<name>``."""
    data = run.data()
    if list(cohort.modalities) != list(data["modalities"]):
        raise NeuroCNNError(
            f"the run was trained on modalities {data['modalities']}; give image columns with these "
            f"names, in this order (got {list(cohort.modalities)}), "
            f"e.g. --images {','.join(data['modalities'])}"
        )
    if not data.get("params"):
        raise NeuroCNNError(
            f"{run.path}/data.json records no preparation parameters; prepare the scans yourself"
        )
    params = PrepareParams(**data["params"])
    trained = training_voxel_sizes(data)
    if params.voxel_size is None and not params.registration and trained is not None:
        # the run kept its scans' own voxel size: new scans must have it too
        other = other_voxel_sizes(cohort.subjects, trained)
        if other:
            raise NeuroCNNError(
                f"the run {run.path} was trained on scans of {mm(trained)} mm voxels, prepared without "
                f"resampling; {len(other)} scan(s) here differ (resample them to {mm(trained)} mm first):",
                problems=other,
            )
    files = sorted(str(p) for s in cohort.subjects for p in s.images.values())
    key = hashlib.sha256("|".join([params.digest(), *files]).encode()).hexdigest()[:10]
    out = run.path / "prepared" / f"{name or Path(cohort.source).stem}-{key}"
    out.parent.mkdir(parents=True, exist_ok=True)
    return prepare_cohort(cohort, out, params, jobs=jobs, progress=progress).cache
