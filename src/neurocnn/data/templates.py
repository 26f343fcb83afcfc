"""The MNI templates synthetic cohorts are built from: ICBM152 2009 grey and white matter and brain
mask (nilearn ships them; nothing is downloaded) and an FA-like map derived from white matter, on
SPM's MNI grid at any voxel size (see :mod:`neurocnn.data.synthetic`)."""

from __future__ import annotations

import functools

import nibabel as nib
import numpy as np
from scipy import ndimage

from neurocnn.data.preprocess import mni_grid as preprocess_mni_grid

__all__ = ["load_templates", "mni_grid"]


def mni_grid(voxel_size: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """The output grid, ``(shape, affine)``: SPM's MNI bounding box at ``voxel_size`` mm, RAS.

    The same grid `neurocnn prepare --register` produces (`neurocnn.data.preprocess.mni_grid`),
    e.g. ``(61, 73, 61)`` with origin (-90, -126, -72) at 3 mm.
    """
    grid = preprocess_mni_grid(voxel_size)
    return grid.shape, grid.affine


@functools.lru_cache(maxsize=4)
def load_templates(voxel_size: float) -> dict[str, np.ndarray]:
    """Templates on the output grid (cached per process): gm, wm, fa and mask, float32.

    Parameters
    ----------
    voxel_size
        Isotropic voxel size in mm.

    Returns
    -------
    dict
        ``{"gm", "wm", "fa", "mask"}`` → read-only float32 arrays of :func:`mni_grid` shape.
    """
    from nilearn import datasets  # slow import; only when templates are needed
    from nilearn.image import resample_img

    shape, affine = mni_grid(voxel_size)
    loaders = {
        "gm": datasets.load_mni152_gm_template,
        "wm": datasets.load_mni152_wm_template,
        "mask": datasets.load_mni152_brain_mask,
    }

    def on_grid(data: np.ndarray, source: np.ndarray) -> np.ndarray:
        img = nib.Nifti1Image(data, source)
        resampled = resample_img(
            img,
            target_affine=affine,
            target_shape=shape,
            interpolation="linear",
            force_resample=True,
            copy_header=True,
        )
        return np.clip(np.asarray(resampled.dataobj, dtype=np.float32), 0.0, 1.0)

    out: dict[str, np.ndarray] = {}
    for key, loader in loaders.items():
        img = loader(resolution=1)
        data = np.asarray(img.get_fdata(), dtype=np.float32)
        if voxel_size > 1.0:
            # anti-aliasing before linear downsampling: FWHM of about one output voxel
            data = ndimage.gaussian_filter(data, voxel_size / 2.355, mode="constant")
        out[key] = on_grid(data, img.affine)
        if key == "wm":
            out["wms"] = on_grid(ndimage.gaussian_filter(data, 3.0 / 2.355, mode="constant"), img.affine)
    mask = (out["mask"] > 0.5).astype(np.float32)
    out["mask"] = mask
    out["fa"] = mask * (0.1 + 0.7 * out.pop("wms") ** 2)
    for key in ("gm", "wm"):
        out[key] = out[key] * ndimage.binary_dilation(mask > 0, iterations=1)
    for array in out.values():
        array.setflags(write=False)
    return out
