"""Cohort-wide checks that look across subjects: one scan listed for two participants, and scans of
different resolutions that preparation would put side by side unresampled.

Each function returns one line per problem (naming the subjects and files), for a `NeuroCNNError`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from neurocnn.data.cohort import Subject

VOXEL_TOLERANCE_MM = 1e-3


def shared_image_files(subjects: Iterable[Subject]) -> list[str]:
    """Image files (by resolved path) listed for more than one participant (masks may be shared)."""
    owners: dict[Path, list[tuple[str, str]]] = {}
    for s in subjects:
        for m, p in s.images.items():
            owners.setdefault(p.resolve(), []).append((s.participant_id, f"{s.key} [{m}]"))
    return [
        f"{path}: listed for {' and '.join(w for _, w in who)}; each participant needs its own scan "
        "(fix the table)"
        for path, who in owners.items()
        if len({pid for pid, _ in who}) > 1
    ]


def shared_image_contents(subjects: Iterable[Subject], hashes: dict[str, dict[str, Any]]) -> list[str]:
    """Image files of different participants with identical contents (sha256), e.g. a copied scan."""
    owners: dict[str, list[tuple[str, str]]] = {}
    for s in subjects:
        for m, p in s.images.items():
            digest = hashes.get(str(p), {}).get("sha256")
            if digest:
                owners.setdefault(digest, []).append((s.participant_id, f"{s.key} [{m}] {p}"))
    return [
        f"{' and '.join(w for _, w in who)} are identical files; each participant needs its own scan "
        "(fix the table)"
        for who in owners.values()
        if len({pid for pid, _ in who}) > 1
    ]


def native_voxel_sizes(path: Path) -> np.ndarray:
    """Voxel sizes (mm) of an image once reoriented to RAS, as `prepare_subject` sees it; header
    only."""
    import nibabel as nib

    img = nib.load(str(path))
    ornt = nib.orientations.io_orientation(img.affine)
    canonical = img.affine @ nib.orientations.inv_ornt_aff(ornt, img.shape[:3])
    return np.asarray(nib.affines.voxel_sizes(canonical), dtype=np.float64)


def native_grid_shape(path: Path, voxel_size: float | None) -> tuple[int, ...]:
    """The grid shape `prepare_subject` gives an image without --shape and without registration
    (its own field of view, at its voxel size or ``voxel_size``); header only."""
    from types import SimpleNamespace

    import nibabel as nib

    from neurocnn.data.preprocess import centred_grid

    img = nib.load(str(path))
    shape = np.array(img.shape[:3])
    ornt = nib.orientations.io_orientation(img.affine)
    canonical = img.affine @ nib.orientations.inv_ornt_aff(ornt, tuple(shape))
    reordered = tuple(int(n) for n in shape[np.argsort(ornt[:, 0])])
    grid = centred_grid(SimpleNamespace(affine=canonical, shape=reordered), voxel_size, None)  # type: ignore[arg-type]
    return tuple(grid.shape)


def mixed_voxel_sizes(subjects: Iterable[Subject]) -> list[str]:
    """Subjects whose first image (the grid preparation keeps without --voxel-size) has other voxel
    sizes than most subjects'. Unreadable files are left to validation."""
    found = _first_image_voxel_sizes(subjects)
    if not found:
        return []
    common = Counter(tuple(np.round(z, 3)) for *_, z in found).most_common(1)[0][0]
    return [
        f"{s.key} [{m}] {path}: voxels {mm(z)} mm, most subjects' are {mm(np.array(common))} mm"
        for s, m, path, z in found
        if not np.allclose(z, common, atol=VOXEL_TOLERANCE_MM)
    ]


def other_voxel_sizes(subjects: Iterable[Subject], expected: np.ndarray) -> list[str]:
    """Subjects whose first image has other voxel sizes than ``expected`` (mm)."""
    return [
        f"{s.key} [{m}] {path}: voxels {mm(z)} mm"
        for s, m, path, z in _first_image_voxel_sizes(subjects)
        if not np.allclose(z, expected, atol=VOXEL_TOLERANCE_MM)
    ]


def _first_image_voxel_sizes(subjects: Iterable[Subject]) -> list[tuple[Subject, str, Path, np.ndarray]]:
    found = []
    for s in subjects:
        m, path = next(iter(s.images.items()))
        try:
            found.append((s, m, path, native_voxel_sizes(path)))
        except Exception:  # validation reports the file
            continue
    return found


def mm(zooms: np.ndarray) -> str:
    """Voxel sizes as 3×3×3 (mm, rounded to µm)."""
    return "×".join(f"{z:g}" for z in np.round(zooms, 3))


def label_warnings(subjects: Iterable[Subject], column: str | None) -> list[str]:
    """Doubts about a label column, for a warning: a single class (nothing to classify; fine only
    for an independent test cohort), or values that look like a continuous variable or an id (every
    class with one participant, or many distinct numbers)."""
    if not column:
        return []
    per_participant = {s.participant_id: s.label for s in subjects if s.label is not None}
    counts = Counter(per_participant.values())
    if not counts:
        return []
    if len(counts) == 1:
        return [
            f"label {column!r} has one class ({next(iter(counts))!r}): fine for a test cohort "
            "(neurocnn evaluate), but splits, cv and baseline need at least two classes"
        ]
    numeric = all(_is_number(v) for v in counts)
    if len(counts) > 10 and (numeric or max(counts.values()) == 1):
        shown = ", ".join(list(counts)[:3])
        kind = "numbers" if numeric else "values, each of one participant"
        return [
            f"label {column!r} has {len(counts)} classes ({kind}, e.g. {shown}): is this a continuous "
            "column? neurocnn classifies: bin it into a few classes in the table, or choose another --label"
        ]
    if max(counts.values()) == 1:
        return [
            f"every class of label {column!r} has a single participant: is this a continuous or id "
            "column? a classifier needs several participants per class"
        ]
    return []


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
