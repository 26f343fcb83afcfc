"""New scans through a trained run: prepared exactly as the training cohort was, checked for
leakage, predicted by the ensemble of fold models (`neurocnn predict`, `neurocnn evaluate`).

Preparation reuses `neurocnn.data.prepare.prepare_cohort` with the parameters recorded in the run's
``data.json`` (those of the training cache), into ``RUN/prepared/<name>``; an unchanged cohort is
reused instantly.

Leakage: a subject with an image file identical (sha256) to a training file was a training scan: it
is warned about, and refused with ``strict``. (Every participant of a cross-validated cohort was in
the training set of most fold models, so its predictions would be optimistic.) A subject whose
participant id alone was in the training cohort gets a softer note, also with ``strict``: ids like
sub-01 recur in every BIDS dataset, so an id cannot tell the same person from another.

A failed preparation removes the ``RUN/prepared/<name>`` folder it created (and no other).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    # errors about the scans name them (there is no table): the scan itself when there is one
    source = Path(rows[0][modality]) if len(rows) == 1 else Path(f"the {len(rows)} scans given")
    return read_cohort(source, images=[modality], require_labels=False, table=table)


@dataclass(frozen=True)
class Leakage:
    """Subjects of a cohort that were (or may have been) in a run's training cohort, one line each.

    ``scans``: an image file identical (sha256) to a training file: certainly the training data.
    ``ids``: only the participant id was in the training cohort, with other files: perhaps the same
    person (another session), perhaps not (ids like sub-01 recur in every BIDS dataset).
    """

    scans: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.scans or self.ids)


def _leakage(
    run: RunFolder, subjects: Sequence[tuple[str, str, dict[str, str], dict[str, str | None]]]
) -> Leakage:
    """(key, participant id, {modality: path}, {path: sha256}) per subject -> `Leakage`."""
    data = run.data()
    seen_ids = set(data.get("participants", []))
    seen_files = set(data.get("input_sha256", []))
    found = Leakage()
    for key, pid, files, digests in subjects:
        same = [f"{m} file {p}" for m, p in files.items() if m != "mask" and digests.get(p) in seen_files]
        if same:
            found.scans[key] = f"{key}: {', '.join(same)} was a training scan of {run.path}"
        elif pid in seen_ids:
            found.ids[key] = (
                f"{key}: participant id {pid} also in the training cohort of {run.path} (another file): "
                "the same person?"
            )
    return found


def leakage(run: RunFolder, cohort: Cohort) -> Leakage:
    """Subjects of ``cohort`` whose image files, or only participant ids, were in the run's training
    cohort.

    Refuses (before hashing anything) image files that are missing, folders or unreadable.
    """
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
    subjects = []
    for s in cohort.subjects:
        files = {m: str(p) for m, p in s.images.items()}
        digests = {str(p): file_sha256(p) for p in s.images.values()}
        subjects.append((s.key, s.participant_id, files, digests))
    return _leakage(run, subjects)


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


def cache_leakage(run: RunFolder, cache: PreparedCohort) -> Leakage:
    """Subjects of a prepared cohort whose image files (by the sha256 recorded when it was prepared),
    or only participant ids, were in the run's training cohort."""
    inputs = cache.info.get("inputs", {})
    m = cache.manifest
    sessions = m["session_id"] if "session_id" in m else [None] * len(m)
    pids = m["participant_id"].astype(str).tolist()
    files = cache.info.get("subject_files", [{}] * len(pids))
    subjects = []
    for pid, ses, subject_files in zip(pids, sessions, files, strict=False):
        key = f"{pid}/{ses}" if isinstance(ses, str) and ses else pid
        digests = {p: inputs.get(p, {}).get("sha256") for p in subject_files.values()}
        subjects.append((key, pid, dict(subject_files), digests))
    return _leakage(run, subjects)


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
    run: RunFolder,
    cohort: Cohort,
    *,
    name: str | None = None,
    jobs: int | None = None,
    progress: bool = True,
    created: list[Path] | None = None,
) -> PreparedCohort:
    """Prepare ``cohort`` with the run's preparation parameters into ``RUN/prepared/<name>``.

    What this call creates is removed when it fails; ``created`` (when given) receives the folders it
    created, outermost first, so that a caller whose later step fails can remove them too
    (`remove_created`)."""
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
    _check_native_grids(run, cohort, params, tuple(data["shape"][2:]))
    files = sorted(str(p) for s in cohort.subjects for p in s.images.values())
    key = hashlib.sha256("|".join([params.digest(), *files]).encode()).hexdigest()[:10]
    out = run.path / "prepared" / f"{name or Path(cohort.source).stem}-{key}"
    made = [p for p in (out.parent, out) if not p.exists()]
    if created is not None:
        created += made
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        # (the folder is the run's own: named by the parameters and files, labels may differ)
        cache = prepare_cohort(cohort, out, params, jobs=jobs, progress=progress, overwrite=True).cache
        if tuple(cache.shape[2:]) != tuple(data["shape"][2:]):
            raise NeuroCNNError(
                f"{cohort.source} prepared like the run {run.path} gives a {_x(cache.shape[2:])} grid, "
                f"the run was trained on {_x(data['shape'][2:])}; resample or crop/pad the scans to "
                f"{_x(data['shape'][2:])}, or train on a cache prepared with --shape"
            )
    except BaseException:
        remove_created(made)
        raise
    return cache


def remove_created(created: Sequence[Path]) -> None:
    """Remove what a failed step created: ``created`` lists new folders, outermost first; the last
    (the prepared cohort) is removed with its contents, the others only when left empty."""
    if not created:
        return
    shutil.rmtree(created[-1], ignore_errors=True)
    for path in reversed(created[:-1]):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _x(shape: Sequence[int]) -> str:
    return "×".join(str(int(n)) for n in shape)


def _check_native_grids(
    run: RunFolder, cohort: Cohort, params: PrepareParams, trained: tuple[int, ...]
) -> None:
    """A run prepared without --shape (and without registration) kept each training scan's own field
    of view: refuse, before preparing anything, scans whose grid would differ from the training one."""
    from neurocnn.data.cohort_checks import native_grid_shape

    if params.shape is not None or params.registration:
        return
    other = []
    for s in cohort.subjects:
        m, path = next(iter(s.images.items()))
        try:
            shape = native_grid_shape(path, params.voxel_size)
        except Exception:  # unreadable: validation names it
            continue
        if shape != trained:
            other.append(f"{s.key} [{m}] {path}: grid {_x(shape)}")
    if other:
        raise NeuroCNNError(
            f"the run {run.path} was trained on a {_x(trained)} grid, prepared without --shape (each scan "
            f"keeps its own field of view); {len(other)} scan(s) here have another grid: resample or "
            f"crop/pad them to {_x(trained)} voxels first, or train on a cache prepared with --shape "
            "(nothing was written):",
            problems=other,
        )
