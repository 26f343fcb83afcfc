"""Small prepared cohorts written straight into the cache layout, with a planted effect.

Much faster than generating NIfTI files and running `prepare`: a 30-subject 12×14×12 cohort takes
milliseconds. The layout is that of `neurocnn.data.cache` (data.npy, affines.npy, manifest.tsv,
cache.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SHAPE = (12, 14, 12)


def write_cache(
    path: Path,
    n: int = 30,
    *,
    shape: tuple[int, int, int] = SHAPE,
    modalities: tuple[str, ...] = ("gm",),
    effect: float = 1.5,
    seed: int = 0,
    classes: tuple[str, ...] = ("control", "patient"),
    prefix: str = "sub-",
    noise: float = 1.0,
) -> Path:
    """A cache whose class ``k`` subjects carry ``effect × k`` extra signal in one corner block."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    labels = np.arange(n) % len(classes)
    rng.shuffle(labels)
    data = (noise * rng.standard_normal((n, len(modalities), *shape))).astype(np.float32)
    sx, sy, sz = (s // 3 for s in shape)
    for i, k in enumerate(labels):
        data[i, :, 1 : 1 + sx, 1 : 1 + sy, 1 : 1 + sz] += effect * k
    np.save(path / "data.npy", data)
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    np.save(path / "affines.npy", np.repeat(aff[None], n, axis=0))
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    manifest = pd.DataFrame(
        {
            "index": np.arange(n),
            "participant_id": ids,
            "session_id": [None] * n,
            "label": [classes[k] for k in labels],
            "label_index": labels,
            "age": rng.integers(20, 80, n),
        }
    )
    manifest.to_csv(path / "manifest.tsv", sep="\t", index=False)
    info = {
        "format": 1,
        "params": {"voxel_size": 3.0},
        "params_hash": "test",
        "modalities": list(modalities),
        "classes": list(classes),
        "label_column": "diagnosis",
        "covariates": ["age"],
        "inputs": {f"/data/{p}.nii.gz": {"size": 1, "mtime_ns": 1, "sha256": f"hash-{p}"} for p in ids},
        "subject_files": [{modalities[0]: f"/data/{p}.nii.gz"} for p in ids],
        "shape": [n, len(modalities), *shape],
        "dtype": "float32",
        "common_affine": aff.tolist(),
    }
    (path / "cache.json").write_text(json.dumps(info))
    return path


TINY_MODEL = {"name": "mrinet", "options": {"widths": [4, 8], "dropout": 0.0}}


def tiny_config(cache: Path, **sections: dict) -> dict:
    """A configuration dictionary for a tiny, fast run; sections override (merged)."""
    from neurocnn.training.config import merge

    base = {
        "cache": str(cache),
        "model": TINY_MODEL,
        "splits": {"folds": 3, "val_fraction": 0.2},
        "optim": {"optimizer": "adam", "lr": 1e-2},
        "train": {"max_epochs": 2, "batch_size": 8, "early_stopping": None},
    }
    if "model" in sections:
        base["model"] = sections.pop("model")
    return merge(base, sections)
