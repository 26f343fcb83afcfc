"""Generated cohorts for the tests: small NIfTI images with a brain-like blob and a table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHAPE = (14, 16, 12)


def blob(rng: np.random.Generator, shape: tuple[int, ...] = SHAPE, scale: float = 1.0) -> np.ndarray:
    """An ellipsoid 'brain' with noise; zero outside."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 0.7
    return (inside * (scale + 0.1 * rng.standard_normal(shape))).astype(np.float32)


def affine(voxel: float = 4.0) -> np.ndarray:
    a = np.diag([voxel, voxel, voxel, 1.0])
    a[:3, 3] = [-20, -30, -20]
    return a


def save(path: Path, data: np.ndarray, aff: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine() if aff is None else aff), str(path))
    return path


@pytest.fixture
def make_cohort(tmp_path: Path) -> Callable[..., Path]:
    """Write ``n`` subjects (modalities gm, wm, and a mask) and a participants table; return it."""

    def make(
        n: int = 8,
        *,
        sep: str = "\t",
        modalities: tuple[str, ...] = ("gm", "wm"),
        mask: bool = True,
        seed: int = 0,
    ) -> Path:
        rng = np.random.default_rng(seed)
        rows = []
        for i in range(n):
            pid = f"sub-{i:03d}"
            row = {
                "participant_id": pid,
                "diagnosis": "patient" if i % 2 else "control",
                "age": f"{40 + i}",
                "site": "A" if i < n // 2 else "B",
            }
            for m in modalities:
                rel = f"{m}/{pid}_{m}.nii.gz"
                save(tmp_path / rel, blob(rng, scale=1.0 + 0.1 * (i % 2)))
                row[m] = rel
            if mask:
                rel = f"mask/{pid}_mask.nii.gz"
                save(tmp_path / rel, (blob(rng) > 0).astype(np.uint8))
                row["mask"] = rel
            rows.append(row)
        cols = list(rows[0])
        table = tmp_path / ("participants.tsv" if sep == "\t" else "participants.csv")
        lines = [sep.join(cols)] + [sep.join(str(r[c]) for c in cols) for r in rows]
        table.write_text("\n".join(lines) + "\n")
        return table

    return make
