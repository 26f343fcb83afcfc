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
    predictions = pd.read_csv(
        path / "predictions.csv",
        dtype={"participant_id": str, "session_id": str, "label": str, "prediction": str},
    )
    histories = {}
    for fold in sorted((path / "folds").glob("r*_f*")):
        if (fold / "history.csv").exists():
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
    """The output folder of `neurocnn interpret`."""

    path: Path
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    group_maps: dict[str, Path]
    regions: dict[str, pd.DataFrame]


def read_interpretation(path: Path | str) -> Interpretation | None:
    path = Path(path)
    if not (path / "summary.json").exists():
        return None
    tables = {
        p.stem: pd.read_csv(p, sep="\t")
        for p in sorted(path.glob("*.tsv"))
        if not p.stem.startswith("subjects_")
    }
    group_maps = {p.name.removesuffix(".nii.gz"): p for p in sorted((path / "group").glob("*.nii.gz"))}
    regions = {p.stem: pd.read_csv(p, sep="\t") for p in sorted((path / "regions").glob("*.tsv"))}
    return Interpretation(path, _json(path / "summary.json"), tables, group_maps, regions)
