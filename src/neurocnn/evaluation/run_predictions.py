"""A run's pooled out-of-fold predictions, read for comparison (`load_run`).

A run is a run folder with ``predictions.csv`` (CNN runs after `neurocnn cv` / `cv gather`,
baseline runs) or a predictions CSV file itself (e.g. of an independent test cohort). Labels and
predictions may be class names or class indices; classes come from the run's ``summary.json`` or
``data.json``, else from the ``prob_<class>`` columns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neurocnn.errors import NeuroCNNError

KEY = ["participant_id", "session_id", "repeat"]  # one prediction per subject and repeat

__all__ = ["KEY", "RunPredictions", "load_run"]


@dataclass
class RunPredictions:
    """The pooled predictions of one run, with class indices."""

    name: str
    path: Path
    classes: list[str]
    table: pd.DataFrame  # KEY + fold, y, pred, prob_<class>

    @property
    def prob(self) -> np.ndarray:
        return self.table[[f"prob_{c}" for c in self.classes]].to_numpy(dtype=np.float64)

    @property
    def n_splits(self) -> int:
        return len(self.table[["repeat", "fold"]].drop_duplicates())


def _classes_of(folder: Path | None, columns: Sequence[str]) -> list[str]:
    from_columns = [c[len("prob_") :] for c in columns if c.startswith("prob_")]
    if folder is not None:
        for name in ("summary.json", "data.json"):
            f = folder / name
            if f.is_file():
                classes = json.loads(f.read_text()).get("classes")
                if classes and all(f"prob_{c}" in columns for c in classes):
                    return [str(c) for c in classes]
    if len(from_columns) < 2:
        raise NeuroCNNError("predictions need one prob_<class> column per class (at least two)")
    return from_columns


def _as_index(values: pd.Series, classes: list[str], what: str, source: Path) -> np.ndarray:
    text = values.astype(str).str.strip()
    if text.isin(classes).all():
        return text.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    numeric = pd.to_numeric(text, errors="coerce")
    if numeric.notna().all() and numeric.between(0, len(classes) - 1).all() and (numeric % 1 == 0).all():
        return numeric.to_numpy(dtype=np.int64)
    bad = sorted(set(text[~text.isin(classes)]))[:5]
    raise NeuroCNNError(
        f"{source}: {what} values {bad} are neither classes ({', '.join(classes)}) nor class indices"
    )


def load_run(path: Path | str, name: str | None = None) -> RunPredictions:
    """Read a run folder's predictions.csv (or a predictions CSV file)."""
    path = Path(path)
    folder = path if path.is_dir() else None
    file = path / "predictions.csv" if folder else path
    if not file.is_file():
        hint = " (a CNN run gathers its folds with `neurocnn cv gather RUN`)" if folder else ""
        raise NeuroCNNError(f"{path}: no predictions.csv{hint}")
    table = pd.read_csv(
        file, dtype={"participant_id": str, "session_id": str, "label": str, "prediction": str}
    )
    missing = [c for c in ("participant_id", "label") if c not in table.columns]
    if missing:
        raise NeuroCNNError(f"{file}: not a predictions table (missing {', '.join(missing)})")
    classes = _classes_of(folder, list(table.columns))
    out = pd.DataFrame(
        {
            "participant_id": table["participant_id"].astype(str),
            "session_id": table["session_id"].fillna("") if "session_id" in table else "",
            "repeat": table["repeat"].astype(int) if "repeat" in table else 0,
            "fold": table["fold"].astype(int) if "fold" in table else 0,
            "y": _as_index(table["label"], classes, "label", file),
        }
    )
    for c in classes:
        out[f"prob_{c}"] = table[f"prob_{c}"].astype(float)
    bad = ~np.isfinite(out[[f"prob_{c}" for c in classes]].to_numpy()).all(axis=1)
    if bad.any():
        raise NeuroCNNError(
            f"{file}: participant {out.loc[bad, 'participant_id'].iloc[0]} has a missing or non-finite "
            f"probability ({int(bad.sum())} row(s)); a diverged model? Its metrics would be undefined"
        )
    if "prediction" in table:
        out["pred"] = _as_index(table["prediction"], classes, "prediction", file)
    else:
        out["pred"] = out[[f"prob_{c}" for c in classes]].to_numpy().argmax(axis=1)
    duplicated = out.duplicated(KEY)
    if duplicated.any():
        first = out[duplicated].iloc[0]
        raise NeuroCNNError(
            f"{file}: participant {first['participant_id']} has several predictions in repeat "
            f"{first['repeat']}; a run predicts each subject once per repeat"
        )
    return RunPredictions(name or path.stem if not folder else name or path.name, path, classes, out)
