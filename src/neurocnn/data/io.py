"""NIfTI reading with the checks a user needs before hours of training.

Every function here reports problems as one line naming the file, what was expected and what to do,
so that `neurocnn.data.cohort.validate_cohort` can gather them for all subjects at once.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np


@dataclass(frozen=True)
class ImageCheck:
    """What a full read of one image found: its grid, or the problem that stops its use."""

    path: Path
    shape: tuple[int, ...] | None = None
    affine: np.ndarray | None = None
    problem: str | None = None


def load_volume(path: Path) -> nib.Nifti1Image:
    """Load a 3D NIfTI image (a 4D image with one volume is accepted and squeezed)."""
    img = nib.load(str(path))
    if img.ndim == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    return img  # type: ignore[return-value]


def check_image(path: Path, *, is_mask: bool = False) -> ImageCheck:
    """Read the whole image and report the first problem that would make it unusable.

    Checks: the file exists, is a readable and complete NIfTI, is 3D, has only finite voxels and
    is not all zero. A truncated .nii.gz only fails when its data are decompressed, so the data are
    always read in full.
    """
    if not path.exists():
        return ImageCheck(
            path,
            problem="file not found; check the path in the table (relative "
            "paths are read relative to the table's folder)",
        )
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for unreadable headers
        return ImageCheck(
            path,
            problem=f"not a readable NIfTI image ({type(exc).__name__}: "
            f"{_short(exc)}); re-export or replace the file",
        )
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        return ImageCheck(
            path,
            shape=shape,
            problem=f"expected a 3D image, found {len(shape)}D "
            f"with shape {shape}; extract one volume (e.g. fslroi) first",
        )
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        return ImageCheck(
            path,
            shape=shape,
            problem=f"image data are truncated or corrupt "
            f"({type(exc).__name__}: {_short(exc)}); re-copy the file",
        )
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        return ImageCheck(
            path, shape=shape, problem=f"{n_bad} voxels are NaN or Inf; replace them (e.g. with 0) before use"
        )
    if not np.any(data):
        what = "mask" if is_mask else "image"
        return ImageCheck(
            path, shape=shape, problem=f"the {what} is all zero; check that the right file is referenced"
        )
    return ImageCheck(path, shape=shape, affine=np.asarray(img.affine, dtype=np.float64))


def _short(exc: BaseException, limit: int = 120) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
