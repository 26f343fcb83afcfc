"""The prepared-cohort cache: one memory-mapped array, its manifest and a record of how it was made.

Layout of a cache folder::

    data.npy        (N, C, X, Y, Z) float32/float16, read with np.load(mmap_mode="r")
    affines.npy     (N, 4, 4) voxel-to-world affine of each subject's prepared grid
    manifest.tsv    index, participant_id, session_id, label, label_index, covariates
    cache.json      parameters, their hash, package version, classes, modalities, the common
                    affine (when every subject shares one grid) and a hash of every input file

A folder only ever appears complete: it is assembled under ``<name>.partial`` and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neurocnn.data.io import file_sha256
from neurocnn.errors import NeuroCNNError

FORMAT = 1
INFO = "cache.json"


@dataclass(frozen=True)
class PreparedCohort:
    """An opened cache: its array (memory-mapped), manifest and metadata."""

    path: Path
    info: dict[str, Any]
    manifest: pd.DataFrame

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def modalities(self) -> list[str]:
        return list(self.info["modalities"])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.info["shape"])

    @property
    def affine(self) -> np.ndarray | None:
        """The common affine of the prepared grid, or None when subjects' grids differ."""
        a = self.info.get("common_affine")
        return None if a is None else np.array(a)

    @property
    def masked(self) -> bool | None:
        """Whether the subjects were prepared with a brain mask (None when the cache does not say)."""
        files = self.info.get("subject_files")
        return None if files is None else any("mask" in f for f in files)

    def subject_voxel_sizes(self) -> np.ndarray | None:
        """Voxel sizes (mm) of each subject's prepared grid, (N, 3) from ``affines.npy`` (one row
        from the common affine when that file is unreadable); None when neither is known."""
        from nibabel.affines import voxel_sizes

        try:
            affines = self.affines()
        except (OSError, ValueError):
            affines = None if self.affine is None else self.affine[None]
        return None if affines is None else np.array([voxel_sizes(a) for a in affines])

    def voxel_sizes(self) -> np.ndarray | None:
        """Voxel sizes (mm) of the prepared grid shared by every subject; None when unknown or when
        subjects' differ."""
        sizes = self.subject_voxel_sizes()
        if sizes is None or not len(sizes) or not np.allclose(sizes, sizes[0], atol=1e-3):
            return None
        return sizes[0]  # type: ignore[no-any-return]

    def array(self) -> np.ndarray:
        return np.load(self.path / "data.npy", mmap_mode="r")

    def affines(self) -> np.ndarray:
        return np.load(self.path / "affines.npy")

    def labels(self) -> np.ndarray:
        return self.manifest["label_index"].to_numpy(dtype=np.int64)


def open_cache(path: Path | str) -> PreparedCohort:
    """Open a cache folder written by `neurocnn prepare`."""
    path = Path(path)
    info_path = path / INFO
    if not info_path.exists():
        raise NeuroCNNError(f"{path} is not a prepared cohort (no {INFO}); run `neurocnn prepare` first")
    info = json.loads(info_path.read_text())
    if info.get("format") != FORMAT:
        raise NeuroCNNError(
            f"{path}: cache format {info.get('format')} is not {FORMAT}; prepare the cohort again"
        )
    manifest = pd.read_csv(
        path / "manifest.tsv", sep="\t", dtype={"participant_id": str, "session_id": str, "label": str}
    )
    return PreparedCohort(path, info, manifest)


def hash_inputs(
    paths: list[Path],
    previous: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """sha256 of each file, reusing a previous hash when size and modification time are unchanged
    (as make and git do), so checking an unchanged cohort costs one stat per file."""
    previous = previous or {}
    out = {}
    for p in paths:
        st = p.stat()
        old = previous.get(str(p))
        if old and old["size"] == st.st_size and old["mtime_ns"] == st.st_mtime_ns:
            out[str(p)] = old
        else:
            out[str(p)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(p)}
    return out


def is_current(path: Path, params_hash: str, inputs: list[Path]) -> bool:
    """True when the cache at ``path`` was made from these inputs with these parameters."""
    info_path = path / INFO
    if not info_path.exists():
        return False
    info = json.loads(info_path.read_text())
    if info.get("format") != FORMAT or info.get("params_hash") != params_hash:
        return False
    recorded = info.get("inputs", {})
    if set(recorded) != {str(p) for p in inputs}:
        return False
    try:
        current = hash_inputs(inputs, recorded)
    except OSError:
        return False
    return all(current[k]["sha256"] == recorded[k]["sha256"] for k in current)


def write_cache(
    final: Path,
    partial: Path,
    arrays: list[Path],
    affines: list[np.ndarray],
    manifest: pd.DataFrame,
    info: dict[str, Any],
) -> None:
    """Assemble per-subject arrays into ``partial``, then swap it in as ``final``."""
    if not arrays:
        raise NeuroCNNError(f"{final}: no subjects to write; the cohort is empty")
    first = np.load(arrays[0], mmap_mode="r")
    shape = (len(arrays), *first.shape)
    data = np.lib.format.open_memmap(partial / "data.npy", mode="w+", dtype=first.dtype, shape=shape)
    for i, a in enumerate(arrays):
        subject = np.load(a, mmap_mode="r")
        if subject.shape != first.shape:
            raise NeuroCNNError(
                f"{manifest.iloc[i]['participant_id']}: prepared shape "
                f"{subject.shape} differs from {first.shape}; give --shape so that "
                "every subject is cropped/padded to one grid"
            )
        data[i] = subject
    data.flush()
    del data
    stacked = np.stack(affines)
    np.save(partial / "affines.npy", stacked)
    common = stacked[0] if np.allclose(stacked, stacked[0], atol=1e-4) else None
    manifest.to_csv(partial / "manifest.tsv", sep="\t", index=False)
    info = {
        **info,
        "format": FORMAT,
        "shape": list(shape),
        "dtype": str(first.dtype),
        "common_affine": None if common is None else common.tolist(),
    }
    (partial / INFO).write_text(json.dumps(info, indent=1))
    # the per-subject files are assembled: drop them, and any left by earlier settings, so the
    # cache holds only data.npy and its tables
    for a in arrays:
        a.unlink(missing_ok=True)
    for d in {a.parent for a in arrays}:
        if d != partial and d.is_relative_to(partial):
            shutil.rmtree(d)
    swap_folder(partial, final)


def swap_folder(partial: Path, final: Path) -> None:
    """Put a finished ``partial`` folder in place of ``final``. An earlier ``final`` waits as
    ``<final>.old-<pid>`` and is removed only after the new one is in place; if the new one cannot
    be moved in, the earlier one goes back."""
    old = None
    if final.exists():
        old = final.with_name(final.name + f".old-{os.getpid()}")
        final.rename(old)
    try:
        partial.rename(final)
    except BaseException:
        if old is not None:
            old.rename(final)
        raise
    if old is not None:
        shutil.rmtree(old)


def check_output_folder(path: Path) -> None:
    """Refuse to replace a folder that is not a neurocnn cache (the user's data is never touched)."""
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / INFO).exists())):
        raise NeuroCNNError(
            f"{path} exists and is not a neurocnn cache; choose another --out folder (nothing was written)"
        )
