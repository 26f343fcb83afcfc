"""Preparation of one subject: reorient, mask, register, resample, normalise.

Pure functions of (images, parameters) -> (array C×X×Y×Z, affine), run in worker processes by
`neurocnn.data.prepare`. Affine registration uses ANTsPy; the default template is the ICBM152 2009
T1 that nilearn ships, so nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from neurocnn.data.io import load_volume
from neurocnn.errors import NeuroCNNError

# SPM's MNI bounding box: [-90, -126, -72] to [90, 90, 108] mm. At 3, 2 and 1.5 mm its grids are the
# seeds' 61×73×61, 91×109×91 and 121×145×121.
MNI_BOX_MIN = np.array([-90.0, -126.0, -72.0])
MNI_BOX_MAX = np.array([90.0, 90.0, 108.0])


class PrepareParams(BaseModel):
    """Every parameter of preparation; its JSON is recorded with the cache and hashed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    voxel_size: float | None = Field(None, gt=0, description="isotropic output voxel size in mm")
    shape: tuple[int, int, int] | None = Field(None, description="output grid shape (crop/pad)")
    registration: bool = Field(False, description="affine registration to the MNI template (ANTsPy)")
    template: str = Field("icbm152_2009", description="'icbm152_2009' (nilearn) or a NIfTI path")
    transform: Literal["Rigid", "Similarity", "Affine"] = "Affine"
    registration_seed: int | None = Field(
        1,
        ge=1,
        description="ANTs' random seed for the metric's sampling points; with a seed the registration "
        "also runs on one thread, so the result is the same bit for bit on every run, whatever the "
        "number of cores (checked on one machine, not across CPU types). "
        "None: ANTs' clock seed and every core (faster, not reproducible)",
    )
    apply_mask: bool = Field(True, description="zero voxels outside the brain mask, when given")
    normalise: Literal["zscore", "minmax", "none"] = "zscore"
    clip_percentiles: tuple[float, float] | None = (0.5, 99.5)
    label_maps: tuple[str, ...] = Field((), description="modalities resampled nearest-neighbour")
    dtype: Literal["float32", "float16"] = "float32"

    @field_validator("clip_percentiles")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 <= v[0] < v[1] <= 100:
            raise ValueError("clip percentiles must satisfy 0 <= low < high <= 100")
        return v

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


@dataclass(frozen=True)
class Grid:
    """A voxel grid: shape and voxel-to-world (RAS mm) affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    def to_json(self) -> dict[str, object]:
        return {"shape": list(self.shape), "affine": np.asarray(self.affine).tolist()}


def mni_grid(voxel_size: float, shape: tuple[int, int, int] | None = None) -> Grid:
    """A grid centred on SPM's MNI bounding box; its own shape unless ``shape`` is given."""
    if shape is None:
        shape = tuple(int(np.rint(e)) + 1 for e in (MNI_BOX_MAX - MNI_BOX_MIN) / voxel_size)  # type: ignore[assignment]
    centre = (MNI_BOX_MIN + MNI_BOX_MAX) / 2
    origin = centre - (np.array(shape) - 1) / 2 * voxel_size
    affine = np.diag([voxel_size] * 3 + [1.0])
    affine[:3, 3] = origin
    return Grid(shape, affine)  # type: ignore[arg-type]


def centred_grid(
    img: nib.Nifti1Image,
    voxel_size: float | None,
    shape: tuple[int, int, int] | None,
    centre_mm: np.ndarray | None = None,
) -> Grid:
    """A RAS-aligned grid around ``centre_mm`` (default: the image centre) in native space."""
    # (the affine's diagonal is not the voxel size of an oblique scan: its columns' lengths are)
    zooms = nib.affines.voxel_sizes(img.affine) if voxel_size is None else np.full(3, voxel_size)
    if centre_mm is None:
        centre_mm = nib.affines.apply_affine(img.affine, (np.array(img.shape[:3]) - 1) / 2)
    if shape is None:
        extent = np.abs(img.affine[:3, :3] @ (np.array(img.shape[:3]) - 1))
        shape = tuple(int(np.floor(e / z)) + 1 for e, z in zip(extent, zooms, strict=True))  # type: ignore[assignment]
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = centre_mm - (np.array(shape) - 1) / 2 * zooms
    return Grid(shape, affine)  # type: ignore[arg-type]


def prepare_subject(
    images: dict[str, Path],
    mask: Path | None,
    params: PrepareParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Prepare one subject's images (in modality order) onto one grid.

    Returns the array (C, X, Y, Z) in ``params.dtype`` and its affine.
    """
    imgs = {m: _canonical(load_volume(p)) for m, p in images.items()}
    mask_img = _canonical(load_volume(mask)) if mask is not None else None
    brain = (np.asanyarray(mask_img.dataobj) > 0) if mask_img is not None else None
    if brain is not None and params.apply_mask:
        imgs = {m: _masked(img, brain) for m, img in imgs.items()}

    if params.registration:
        grid = mni_grid(params.voxel_size or 2.0, params.shape)
        resampled, brain_out = _register_and_resample(imgs, mask_img, grid, params)
    else:
        centre = None
        if brain is not None:
            centre = nib.affines.apply_affine(mask_img.affine, np.argwhere(brain).mean(axis=0))  # type: ignore[union-attr]
        first = next(iter(imgs.values()))
        grid = centred_grid(first, params.voxel_size, params.shape, centre)
        resampled = {m: _resample(img, grid, nearest=m in params.label_maps) for m, img in imgs.items()}
        brain_out = _resample(mask_img, grid, nearest=True) > 0 if mask_img is not None else None

    channels = []
    for m, data in resampled.items():
        if m in params.label_maps or params.normalise == "none":
            channels.append(data)
            continue
        channels.append(normalise(data, brain_out, params))
    out = np.stack(channels).astype(params.dtype)
    check_prepared(out, images, params)
    return out, grid.affine


def check_prepared(out: np.ndarray, images: dict[str, Path], params: PrepareParams) -> None:
    """Refuse a prepared array that a network must not see: values that are not finite (e.g. above
    float16's 65504 without normalisation) or a channel with nothing left in it (e.g. a brain mask
    that does not overlap the image, or an image outside the output grid)."""
    for (m, path), channel in zip(images.items(), out, strict=True):
        bad = int(np.count_nonzero(~np.isfinite(channel)))
        if bad:
            hint = (
                f"values beyond {params.dtype}'s range; use --dtype float32 or normalise the scans"
                if params.dtype == "float16"
                else "check the scan's values"
            )
            raise NeuroCNNError(f"{m} file {path}: {bad} prepared voxel(s) are Inf or NaN ({hint})")
        if not np.any(channel):
            raise NeuroCNNError(
                f"{m} file {path}: the prepared image is all zero (does the brain mask overlap the "
                "image? does --shape keep the brain inside the grid?); check the mask and the image"
            )


def normalise(data: np.ndarray, brain: np.ndarray | None, params: PrepareParams) -> np.ndarray:
    """Percentile clipping then z-score or min-max, computed within the brain; background stays 0."""
    inside = brain if brain is not None else data != 0
    if not inside.any():
        return np.zeros_like(data)
    values = data[inside]
    if params.clip_percentiles is not None:
        lo, hi = np.percentile(values, params.clip_percentiles)
        data = np.clip(data, lo, hi)
        values = data[inside]
    if params.normalise == "zscore":
        std = values.std()
        out = (data - values.mean()) / (std if std > 0 else 1.0)
    else:
        lo, hi = values.min(), values.max()
        out = (data - lo) / (hi - lo if hi > lo else 1.0)
    return np.where(inside, out, 0.0).astype(np.float32)


def _canonical(img: nib.Nifti1Image) -> nib.Nifti1Image:
    return nib.as_closest_canonical(img)  # type: ignore[no-any-return]


def _masked(img: nib.Nifti1Image, brain: np.ndarray) -> nib.Nifti1Image:
    data = img.get_fdata(dtype=np.float32) * brain
    return nib.Nifti1Image(data, img.affine)


def _resample(img: nib.Nifti1Image, grid: Grid, *, nearest: bool) -> np.ndarray:
    from scipy.ndimage import affine_transform

    # voxel of the output grid -> voxel of the input image
    vox2vox = np.linalg.inv(img.affine) @ grid.affine
    data = np.asanyarray(img.dataobj).astype(np.float32)
    return affine_transform(
        data, vox2vox, output_shape=grid.shape, order=0 if nearest else 1, mode="constant", cval=0.0
    )


@lru_cache(maxsize=4)
def _template(name: str, voxel_size: float) -> nib.Nifti1Image:
    if name == "icbm152_2009":
        from nilearn.datasets import load_mni152_template

        # the registration runs at >= 2 mm: enough for an affine, and fast
        return load_mni152_template(resolution=max(2, int(voxel_size)))  # type: ignore[no-any-return]
    return _canonical(load_volume(Path(name)))


def _to_ants(img: nib.Nifti1Image | np.ndarray, affine: np.ndarray | None = None):  # type: ignore[no-untyped-def]
    import ants

    if isinstance(img, np.ndarray):
        img = nib.Nifti1Image(img.astype(np.float32), affine)
    else:
        img = nib.Nifti1Image(img.get_fdata(dtype=np.float32), img.affine)
    img.header.set_xyzt_units("mm", "sec")
    return ants.from_nibabel_nifti(img)


def _register_and_resample(
    imgs: dict[str, nib.Nifti1Image],
    mask_img: nib.Nifti1Image | None,
    grid: Grid,
    params: PrepareParams,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Register the first modality to the template; apply the one transform to every image."""
    import ants

    fixed = _to_ants(_template(params.template, params.voxel_size or 2.0))
    moving = _to_ants(next(iter(imgs.values())))
    # ANTs samples the metric at random points (clock-seeded unless told) and sums it over threads:
    # both change the transform. The thread count is fixed by the worker (`prepare._init_worker`).
    previous = ants.config._random_seed
    ants.config._random_seed = params.registration_seed
    try:
        reg = ants.registration(fixed=fixed, moving=moving, type_of_transform=params.transform)
    finally:
        ants.config._random_seed = previous
    target = _to_ants(np.zeros(grid.shape, np.float32), grid.affine)
    out = {}
    for m, img in imgs.items():
        interp = "nearestNeighbor" if m in params.label_maps else "linear"
        warped = ants.apply_transforms(
            fixed=target, moving=_to_ants(img), transformlist=reg["fwdtransforms"], interpolator=interp
        )
        out[m] = warped.numpy().astype(np.float32)
    brain = None
    if mask_img is not None:
        binary = (np.asanyarray(mask_img.dataobj) > 0).astype(np.float32)
        warped = ants.apply_transforms(
            fixed=target,
            moving=_to_ants(binary, mask_img.affine),
            transformlist=reg["fwdtransforms"],
            interpolator="nearestNeighbor",
        )
        brain = warped.numpy() > 0.5
    for f in reg["fwdtransforms"] + reg["invtransforms"]:
        Path(f).unlink(missing_ok=True)
    return out, brain


def params_json(params: PrepareParams) -> str:
    return json.dumps(params.model_dump(mode="json"), sort_keys=True)
