"""Read what the report shows from run folders (CNN or baseline) and an interpretation folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from neurocnn.errors import NeuroCNNError


@dataclass
class Run:
    """A finished run folder: its configuration, cohort record, summary, predictions, histories."""

    path: Path
    name: str
    config: dict[str, Any]
    data: dict[str, Any]
    summary: dict[str, Any]
    predictions: pd.DataFrame
    histories: dict[str, pd.DataFrame] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.summary.get("classes") or self.data.get("classes") or [])

    @property
    def model(self) -> str:
        """The model (CNN) or method (baseline) the run trained."""
        model = self.summary.get("model") or self.config.get("model") or self.config.get("name")
        if isinstance(model, dict):
            model = model.get("name")
        return str(model or "")

    @property
    def is_baseline(self) -> bool:
        return "baseline" in self.config or "kind" in self.config


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def read_run(path: Path | str) -> Run:
    path = Path(path)
    summary_path = path / "summary.json"
    if not summary_path.exists():
        raise NeuroCNNError(
            f"{path}: no summary.json; is it a finished run folder? "
            "(`neurocnn cv gather RUN` writes it for folds trained separately)"
        )
    config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").exists() else {}
    summary = _json(summary_path)
    # no pooled test predictions: a run whose test set is a separate cohort (independent scheme,
    # tested with `neurocnn evaluate`); the report says so where it would show them
    predictions = (
        pd.read_csv(
            path / "predictions.csv",
            dtype={"participant_id": str, "session_id": str, "label": str, "prediction": str},
        )
        if (path / "predictions.csv").exists()
        else pd.DataFrame()
    )
    # learning curves of the folds the summary counts (not of failed or unfinished ones)
    counted = {f.get("fold") for f in summary["per_fold"]} if "per_fold" in summary else None
    histories = {}
    for fold in sorted((path / "folds").glob("r*_f*")):
        if (fold / "history.csv").exists() and (counted is None or fold.name in counted):
            histories[fold.name] = pd.read_csv(fold / "history.csv")
    # Named by folder, as `neurocnn compare` names runs: two runs of one model (say two learning
    # rates, or a baseline tuned and untuned) must not share a row label.
    return Run(
        path,
        path.name,
        config or {},
        _json(path / "data.json"),
        summary,
        predictions,
        histories,
        _json(path / "environment.json"),
    )


@dataclass
class Interpretation:
    """The output folder of `neurocnn interpret`; ``group_maps`` by their label (method · class)."""

    path: Path
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    group_maps: dict[str, Path]
    regions: dict[str, pd.DataFrame]

    @property
    def groups(self) -> dict[str, str]:
        """Group name (in file names and tables) -> what it is (the class name, or the sum)."""
        return dict(self.summary.get("groups") or {})

    @property
    def source(self) -> str:
        """Which models explained which subjects."""
        source = self.summary.get("source") or {}
        return str(source.get("description") or "each fold's best model on its own test subjects")


RUN_FILES = (".neurocnn-run", "config.yaml", "splits.tsv", "data.json", "folds")


def read_interpretation(path: Path | str, *, explicit: bool = False) -> Interpretation | None:
    """The interpretation in ``path``; None when the default folder is absent, an error when an
    ``explicit`` one is absent or is not an interpretation (a run folder's summary.json is not)."""
    path = Path(path)
    if not (path / "summary.json").exists():
        if explicit:
            raise NeuroCNNError(f"--interpret {path}: no interpretation there (no summary.json)")
        return None
    summary = _json(path / "summary.json")
    marked = summary.get("kind") == "neurocnn-interpretation" or (path / ".neurocnn-interpretation").exists()
    # folders from before the marker: an interpretation's summary has per-method records
    legacy = isinstance(summary.get("methods"), dict) and not any((path / f).exists() for f in RUN_FILES)
    if not (marked or legacy):
        raise NeuroCNNError(f"{path} is not an interpretation folder (`neurocnn interpret RUN` writes one)")
    tables = {
        p.stem: pd.read_csv(p, sep="\t")
        for p in sorted(path.glob("*.tsv"))
        if not p.stem.startswith("subjects_")
    }
    groups = summary.get("groups") or {}
    methods = sorted(summary.get("methods") or {}, key=len, reverse=True)
    group_maps = {}
    for p in sorted((path / "group").glob("*.nii.gz")):
        stem = p.name.removesuffix(".nii.gz")
        method = next((m for m in methods if stem.startswith(f"{m}_")), None)
        key = stem.removeprefix(f"{method}_") if method else stem
        label = f"{method} · {groups.get(key, key)}" if method else stem
        group_maps[label] = p
    regions = {p.stem: pd.read_csv(p, sep="\t") for p in sorted((path / "regions").glob("*.tsv"))}
    return Interpretation(path, summary, tables, group_maps, regions)
