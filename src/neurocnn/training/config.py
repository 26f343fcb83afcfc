"""The typed configuration of an experiment: what to train, on which splits, how; YAML in and out.

The resolved configuration (every default filled in) is written to the run folder as
``config.yaml`` with `yaml.safe_dump` and read back with `yaml.safe_load`, so that a run can be
repeated from its folder alone and `--resume`/`--fold` can check that they continue the same run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from neurocnn.errors import NeuroCNNError, validation_problems

ARTEFACTS = ("bias", "noise", "gibbs", "spike", "motion", "ghosting")
DEFAULT_LR = {"adam": 1e-4, "adamw": 1e-4, "sgd": 1e-2, "adadelta": 1.0}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    name: str = Field(description="a name from `neurocnn models`")
    options: dict[str, Any] = Field(default_factory=dict, description="model-specific options")
    modalities: Literal["auto", "branches", "channels"] = Field(
        "auto",
        description="several modalities: one branch each (Hu et al. 2020) or stacked as channels; "
        "auto = branches when the model has a multimodal version",
    )


class SplitConfig(_Section):
    scheme: Literal["kfold", "holdout", "independent"] = "kfold"
    folds: int = Field(10, ge=2)
    repeats: int = Field(1, ge=1)
    val_fraction: float = Field(0.1, ge=0, lt=1, description="validation share carved from training")
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    nested: int = Field(0, ge=0, description="inner folds for the hyper-parameter search (0: none)")
    subset: float | None = Field(None, gt=0, le=1, description="stratified share of training kept")
    table: str | None = Field(None, description="an existing split table to use instead")


class OptimConfig(_Section):
    optimizer: Literal["adam", "adamw", "sgd", "adadelta"] = "adam"
    lr: float | None = Field(None, gt=0, description="default: 1e-4 Adam(W), 1e-2 SGD, 1.0 Adadelta")
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, description="SGD only")
    schedule: Literal["none", "plateau", "multistep", "cosine"] = "none"
    milestones: list[int] = Field(default_factory=lambda: [5, 15], description="multistep epochs")
    gamma: float = Field(0.1, gt=0, description="multistep factor")
    plateau_factor: float = Field(0.1, gt=0, lt=1)
    plateau_patience: int = Field(10, ge=0, description="epochs without val-loss improvement (S4)")

    @model_validator(mode="after")
    def _default_lr(self) -> OptimConfig:
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        return self


class TrainConfig(_Section):
    max_epochs: int = Field(50, ge=1)
    batch_size: int = Field(8, ge=1, description="global batch (split over DDP processes)")
    early_stopping: int | None = Field(
        10, ge=1, description="patience in epochs on the validation loss; None: off"
    )
    min_epochs: int = Field(
        0,
        ge=0,
        description="early stopping cannot end training before this many epochs (networks whose "
        "validation loss first rises, such as MriNet on IXI, need a few epochs before it falls)",
    )
    ema: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="exponential moving average of the weights (and BatchNorm statistics) with this "
        "decay per optimiser step; validation, checkpoints and predictions use the average. None: off",
    )
    select: Literal["balanced_accuracy", "loss"] = Field(
        "balanced_accuracy", description="validation metric that picks the best checkpoint"
    )
    class_weights: Literal["balanced", "none"] = "balanced"
    precision: str = "32-true"
    num_workers: int = Field(0, ge=0)
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    deterministic: bool | Literal["warn"] | None = Field(
        None,
        description="deterministic algorithms; None: True on CPU, 'warn' on GPU (some CUDA kernels, "
        "e.g. max-pool backward, have no deterministic version)",
    )


class AugmentConfig(_Section):
    """Training-set augmentation. Flips and shifts run batched on the device; the rest per sample
    in the data loader through MONAI (TorchIO for motion and ghosting)."""

    flip: bool = Field(False, description="random sagittal (left-right, first axis) flips")
    shift: tuple[int, int] | None = Field(None, description="integer translation range, e.g. (-2, 3)")
    rotate: float = Field(0.0, ge=0, le=45, description="maximum rotation in degrees, each axis")
    zoom: tuple[float, float] | None = Field(None, description="zoom range, e.g. (0.9, 1.1)")
    artefacts: list[Literal["bias", "noise", "gibbs", "spike", "motion", "ghosting"]] = Field(
        default_factory=list
    )
    probability: float = Field(0.5, ge=0, le=1, description="chance of each per-sample transform")

    @field_validator("shift")
    @classmethod
    def _ordered_shift(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and v[0] > v[1]:
            raise ValueError("shift range must be (low, high) with low <= high")
        return v

    @property
    def per_sample(self) -> bool:
        return bool(self.rotate or self.zoom or self.artefacts)


class TransferConfig(_Section):
    source: str | None = Field(None, description="run folder or checkpoint of the same architecture")
    backbone_lr_factor: float = Field(0.001, ge=0, description="backbone lr = factor × head lr (S4)")
    freeze_backbone: bool = False


class LoggingConfig(_Section):
    tensorboard: bool = False
    mlflow: str | None = Field(None, description="tracking URI: file:DIR or sqlite:///FILE")


class ExperimentConfig(_Section):
    """Everything that defines a training run."""

    cache: str = Field(description="prepared cohort folder")
    model: ModelConfig
    splits: SplitConfig = Field(default_factory=SplitConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    search: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="nested-CV grid: dotted key (e.g. optim.lr) -> candidate values",
    )
    seed: int = 0
    permute_labels: bool = False

    @model_validator(mode="after")
    def _search_needs_nested(self) -> ExperimentConfig:
        if self.search and not self.splits.nested:
            raise ValueError("a hyper-parameter search needs nested CV (splits.nested >= 2)")
        if self.splits.nested == 1:
            raise ValueError("splits.nested must be 0 (off) or at least 2")
        for key in self.search:
            if key.split(".")[0] in ("cache", "splits", "search", "seed", "permute_labels"):
                raise ValueError(f"{key} cannot be searched")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def with_overrides(self, overrides: dict[str, Any]) -> ExperimentConfig:
        """A copy with dotted keys replaced (``{"optim.lr": 1e-3}``), validated again.

        Another ``optim.optimizer`` without an ``optim.lr`` takes the new optimiser's default rate
        when the current rate is the current optimiser's default (a search over optimisers would
        otherwise run SGD and Adadelta at Adam's 1e-4).
        """
        data = self.model_dump(mode="json")
        if (
            "optim.optimizer" in overrides
            and "optim.lr" not in overrides
            and self.optim.lr == DEFAULT_LR[self.optim.optimizer]
        ):
            data["optim"]["lr"] = None
        for key, value in overrides.items():
            node = data
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        return parse_config(data)


def parse_config(data: dict[str, Any], source: str = "configuration") -> ExperimentConfig:
    """Validate a configuration dictionary; errors name each bad field."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise NeuroCNNError(f"{source} is not valid:", problems=validation_problems(exc)) from None


def load_config(path: Path | str) -> ExperimentConfig:
    path = Path(path)
    if not path.exists():
        raise NeuroCNNError(f"configuration {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise NeuroCNNError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise NeuroCNNError(f"{path} must hold a mapping of settings")
    return parse_config(data, str(path))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested dictionary merge: values of ``override`` win; sections are merged key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("search",):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
