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
