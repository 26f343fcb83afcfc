"""Lightning's checkpoint callback, made safe for run folders that are moved between runs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch.callbacks import ModelCheckpoint

if TYPE_CHECKING:
    from neurocnn.training.config import ExperimentConfig


class FoldCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose selection survives a moved or copied run folder.

    A checkpoint stores the callback's folder and the absolute paths of the best checkpoints. When
    a resumed fold finds another folder there, Lightning keeps only the old ``best_model_path`` and
    restarts the selection: the next epoch becomes "best" whatever its score, and the old path may
    point into another copy of the run. Here every path recorded in the old folder is mapped to the
    same file name in the current one before Lightning reads the state.

    The state key is Lightning's own (``ModelCheckpoint{...}``), so runs written before this class
    existed resume as before.
    """

    def _generate_state_key(self, **kwargs: Any) -> str:
        return f"{ModelCheckpoint.__qualname__}{kwargs!r}"

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old is not None and new is not None and os.path.realpath(old) != os.path.realpath(new):
            old_dir = os.path.realpath(old)

            def moved(path: Any) -> Any:
                if isinstance(path, str) and path and os.path.dirname(os.path.realpath(path)) == old_dir:
                    return os.path.join(new, os.path.basename(path))
                return path

            state_dict = {
                **state_dict,
                "dirpath": new,
                **{
                    key: moved(state_dict[key])
                    for key in ("best_model_path", "kth_best_model_path", "last_model_path")
                    if key in state_dict
                },
                "best_k_models": {moved(k): v for k, v in state_dict.get("best_k_models", {}).items()},
            }
        super().load_state_dict(state_dict)


FIT_RECORD = "fit.json"  # written when training ends: the best checkpoint, epochs, early stop


def config_digest(config: ExperimentConfig) -> str:
    """What the fit record's ``config`` names: the configuration without the cache path (a moved
    cache is the same training, `open_run` accepts it)."""
    return hashlib.sha256(config.model_dump_json(exclude={"cache"}).encode()).hexdigest()


def _digest_with_cache(config: ExperimentConfig) -> str:
    """The digest of records written before the cache path was left out."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()


def fit_record(fold_dir: Path, config: ExperimentConfig) -> dict[str, Any] | None:
    """The record of a finished training of this fold with this configuration (another one, e.g.
    more epochs, continues from last.ckpt instead)."""
    try:
        record = json.loads((fold_dir / FIT_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not (fold_dir / str(record.get("best", ""))).exists():
        return None
    if record.get("config") not in (config_digest(config), _digest_with_cache(config)):
        return None
    return record
