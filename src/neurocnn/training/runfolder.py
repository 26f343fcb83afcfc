"""The run folder: everything a training run produced, readable by every later step.

::

    RUN/
      config.yaml          resolved configuration (yaml.safe_dump)
      data.json            the training cohort: cache path, preparation parameters, classes,
                           modalities, array shape, voxel size, whether brain masks were used,
                           participants and input-file hashes (for `predict`'s leakage check and
                           for preparing new scans the same way)
      splits.tsv           the split table (neurocnn.data.splits.save_splits)
      environment.json     versions, git commit, hardware, command line
      folds/r{R}_f{F}/     best.ckpt, last.ckpt, history.csv, predictions.csv, metrics.json
                           (metrics.json is written last: its presence marks a finished fold);
                           fit.json once training ended (a resumed fold then only predicts);
                           error.txt when the fold failed; search.json and search/ with a
                           nested hyper-parameter search (what it chose: `fold_config`)
      predictions.csv      out-of-fold predictions of every finished fold
      metrics.json         pooled out-of-fold metrics with 95% bootstrap CIs
      summary.json         per-fold metrics, mean ± std, pooled metrics and CIs, missing folds

A run folder is never replaced without ``overwrite``; ``resume`` continues it only with the same
configuration.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from neurocnn import __version__
from neurocnn.errors import NeuroCNNError
from neurocnn.training.config import ExperimentConfig, parse_config

CONFIG, DATA, SPLITS, ENVIRONMENT = "config.yaml", "data.json", "splits.tsv", "environment.json"
SEARCH = "search.json"  # in a fold folder: what its nested hyper-parameter search chose
MARKER = ".neurocnn-run"  # written first: what makes a folder a run folder


def fold_name(repeat: int, fold: int) -> str:
    return f"r{repeat}_f{fold}"


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def folds(self) -> Path:
        return self.path / "folds"

    def fold_dir(self, repeat: int, fold: int) -> Path:
        return self.folds / fold_name(repeat, fold)

    def is_done(self, repeat: int, fold: int) -> bool:
        return (self.fold_dir(repeat, fold) / "metrics.json").exists()

    def config(self) -> ExperimentConfig:
        return read_config(self.path)

    def data(self) -> dict[str, Any]:
        path = self.path / DATA
        if not path.exists():
            raise NeuroCNNError(f"{self.path} has no {DATA}; it is not a neurocnn training run")
        return json.loads(path.read_text())


def fold_config(config: ExperimentConfig, fold_dir: Path) -> ExperimentConfig:
    """The configuration a fold was trained with: the run's, with what its nested search chose
    (model options included, so its network is built from this, not from the run's)."""
    path = Path(fold_dir) / SEARCH
    if not path.exists():
        return config
    chosen = json.loads(path.read_text())["chosen"]
    return config.with_overrides(chosen).model_copy(update={"search": {}})


def read_config(run: Path) -> ExperimentConfig:
    path = Path(run) / CONFIG
    if not path.exists():
        raise NeuroCNNError(f"{run} is not a run folder (no {CONFIG}); train one with `neurocnn cv`")
    return parse_config(yaml.safe_load(path.read_text()), str(path))


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def open_run(
    path: Path | str,
    config: ExperimentConfig,
    *,
    overwrite: bool = False,
    resume: bool = False,
    shared: bool = False,
) -> RunFolder:
    """Create the run folder, or continue it.

    Parameters
    ----------
    overwrite
        Delete an existing run folder first (refused for folders that are not run folders).
    resume
        Continue an existing run made with the same configuration.
    shared
        Several jobs (``--fold``) fill one run folder: an existing folder with the same
        configuration is accepted; each job refuses only a fold that already exists.
    """
    path = Path(path)
    run = RunFolder(path)
    exists = path.exists() and any(path.iterdir())
    if exists and not is_run_folder(path):
        # e.g. the user's own experiment folder with its config.yaml: never deleted, never "a run"
        raise NeuroCNNError(
            f"{path} exists and is not a neurocnn run folder; it was left alone. Choose another --out"
        )
    if exists and overwrite:
        shutil.rmtree(path)
        exists = False
    if exists:
        # the cache may have moved since (check_same_data compares what it holds)
        old, new = (
            {k: v for k, v in c.model_dump().items() if k != "cache"} for c in (read_config(path), config)
        )
        if old != new:
            changed = _differences(old, new)
            raise NeuroCNNError(
                f"{path} holds a run with a different configuration ({'; '.join(changed[:5])}); "
                "use another --out, or --overwrite to replace it"
            )
        if not (resume or shared):
            raise NeuroCNNError(
                f"{path} already holds this run; --resume continues it, --overwrite replaces it"
            )
        if read_config(path).cache != config.cache:
            write_text(path / CONFIG, config.to_yaml())  # where the cache is now
        return run
    path.mkdir(parents=True, exist_ok=True)
    write_text(path / MARKER, f"neurocnn {__version__} run folder\n")
    write_text(path / CONFIG, config.to_yaml())
    return run


def is_run_folder(path: Path) -> bool:
    """Made by `open_run` (its marker; runs from before the marker: config.yaml with data.json)."""
    return (path / MARKER).exists() or ((path / CONFIG).exists() and (path / DATA).exists())


# what must not change between the jobs that fill one run folder (the cache may have moved)
SAME_DATA = ("params_hash", "classes", "modalities", "shape", "label_column", "participants", "input_sha256")


def check_same_data(run: RunFolder, record: dict[str, Any]) -> None:
    """Refuse to continue a run on a cohort prepared differently from the one it started on.

    A cache prepared again with other settings (voxel size, normalisation, other scans) under the
    same path would otherwise mix folds trained on two different inputs in one result.
    """
    path = run.path / DATA
    if not path.exists():
        return
    old = json.loads(path.read_text())
    changed = [k for k in SAME_DATA if k in old and old[k] != record.get(k)]
    if changed:
        raise NeuroCNNError(
            f"{run.path} was trained on a cohort prepared differently from {record.get('cache')} "
            f"({', '.join(changed)} differ); its folds and new ones would not be comparable. "
            "Use another --out, or --overwrite to start it again"
        )


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


def environment() -> dict[str, Any]:
    """Versions, git commit, hardware and command line, for environment.json."""
    import lightning
    import numpy
    import sklearn
    import torch

    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    return {
        "neurocnn": __version__,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
        "scikit_learn": sklearn.__version__,
        "platform": platform.platform(),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "cuda": torch.version.cuda,
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def write_json(path: Path, data: Any) -> None:
    """JSON with NaN written as null (strict JSON readers reject NaN)."""
    write_text(path, json.dumps(_clean(data), indent=1, default=_plain, allow_nan=False) + "\n")


def _clean(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
