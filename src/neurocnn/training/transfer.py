"""Transfer learning (S4): a backbone trained on another cohort, a new classification layer.

The source is a run folder of the same architecture (its single model, or the one fold named by a
checkpoint path) or a checkpoint file. Everything but the classification layer is copied; the layer
is replaced by a fresh one for the target's classes (`NeuroNet.reset_head`), and its parameter names
are returned so that the optimiser can train it at the full learning rate and the backbone at a
fraction of it, or freeze the backbone.

The source must have been trained on another cohort: a source run trained on image files of the
target cohort is refused, since its backbone has already seen the target's test subjects; shared
participant ids alone (other files) give a warning (`check_source_cohort`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from neurocnn.errors import NeuroCNNError
from neurocnn.training.config import ExperimentConfig, load_config

if TYPE_CHECKING:
    from neurocnn.data.cache import PreparedCohort


def replace_head(net: nn.Module, num_classes: int) -> list[str]:
    """Give ``net`` a fresh classification layer; return the names of its new parameters.

    Zoo models know their head (`reset_head`); for any other module the last `nn.Linear` is the
    classification layer.
    """
    before = {id(p) for p in net.parameters()}
    if hasattr(net, "reset_head"):
        net.reset_head(num_classes)
    else:
        name, last = None, None
        for n, m in net.named_modules():
            if isinstance(m, nn.Linear):
                name, last = n, m
        if last is None or name is None:
            raise NeuroCNNError(f"{type(net).__name__} has no Linear layer to replace")
        parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
        setattr(parent, name.rsplit(".", 1)[-1], nn.Linear(last.in_features, num_classes))
    return [n for n, p in net.named_parameters() if id(p) not in before]


def source_checkpoint(source: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint file, its run folder or None) for a run folder or a checkpoint path."""
    path = Path(source)
    if path.is_file():
        run = path.parent.parent.parent if path.parent.parent.name == "folds" else None
        return path, run if run is not None and (run / "config.yaml").exists() else None
    if not (path / "config.yaml").exists():
        raise NeuroCNNError(f"transfer source {path} is neither a checkpoint file nor a run folder")
    best = sorted((path / "folds").glob("*/best.ckpt"))
    if len(best) != 1:
        found = ", ".join(str(b.relative_to(path)) for b in best) or "none"
        raise NeuroCNNError(
            f"transfer source {path} holds {len(best)} trained models ({found}); name one checkpoint, "
            "e.g. --transfer-from RUN/folds/r0_f0/best.ckpt (or train the source with --split independent)"
        )
    return best[0], path


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The network weights of a Lightning checkpoint (loaded with ``weights_only=True``)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise NeuroCNNError(f"cannot read checkpoint {path}: {exc}") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise NeuroCNNError(f"{path} holds no state_dict")
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")} or state


def check_same_architecture(source_run: Path, config: ExperimentConfig, shape: tuple[int, ...]) -> None:
    src = load_config(source_run / "config.yaml")
    theirs = (src.model.name, src.model.options)
    ours = (config.model.name, config.model.options)
    if theirs != ours:
        raise NeuroCNNError(
            f"transfer source {source_run} trained {theirs[0]} {theirs[1] or ''}, not "
            f"{ours[0]} {ours[1] or ''}; transfer learning needs the same architecture"
        )
    data = source_run / "data.json"
    if data.exists():
        src_shape = tuple(json.loads(data.read_text())["shape"][1:])
        if src_shape != tuple(shape[1:]):
            raise NeuroCNNError(
                f"transfer source {source_run} was trained on arrays {src_shape}, the target cohort "
                f"has {tuple(shape[1:])}; prepare both cohorts with the same grid"
            )


def load_backbone(
    net: nn.Module, config: ExperimentConfig, shape: tuple[int, ...], num_classes: int
) -> list[str]:
    """Copy the source backbone into ``net``, give it a new head; return the head's parameter names."""
    assert config.transfer.source is not None
    ckpt, run = source_checkpoint(config.transfer.source)
    if run is not None:
        check_same_architecture(run, config, shape)
    state = load_state(ckpt)
    heads = replace_head(net, num_classes)
    backbone = {k: v for k, v in state.items() if k not in set(heads)}
    try:
        missing, unexpected = net.load_state_dict(backbone, strict=False)
    except RuntimeError as exc:
        raise NeuroCNNError(
            f"the backbone in {ckpt} does not fit {config.model.name} (a different architecture, "
            f"options or input shape): {str(exc).splitlines()[1].strip() if chr(10) in str(exc) else exc}"
        ) from None
    missing = [k for k in missing if k not in heads]
    if missing or unexpected:
        raise NeuroCNNError(
            f"the checkpoint {ckpt} is not a {config.model.name}: "
            f"{len(missing)} weight(s) missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    if config.transfer.freeze_backbone:
        for n, p in net.named_parameters():
            p.requires_grad_(n in heads)
    return heads


def check_source_cohort(config: ExperimentConfig, cache: PreparedCohort) -> None:
    """Refuse a transfer source trained on subjects of the target cohort ``cache``.

    The source run's data.json lists its training participants and the sha256 of its image files;
    a file of the target cohort among them means its backbone has seen subjects that the target's
    folds test on (refused); a shared participant id with other files may be a coincidence of
    naming (a warning). A checkpoint outside a run folder records neither: the overlap cannot be checked, and
    a warning says so.
    """
    if not config.transfer.source:
        return
    ckpt, run = source_checkpoint(config.transfer.source)
    if run is None or not (run / "data.json").exists():
        warnings.warn(
            f"transfer source {ckpt} is not in a run folder with a data.json: whether it was trained "
            "on subjects of the target cohort cannot be checked; pre-train on a different cohort",
            UserWarning,
            stacklevel=2,
        )
        return
    from neurocnn.evaluation.predict import cache_leakage  # evaluation reads the run folder layout
    from neurocnn.training.runfolder import RunFolder

    found = cache_leakage(RunFolder(run), cache)
    if found.scans:
        pids = list(found.scans)
        raise NeuroCNNError(
            f"transfer source {run} was trained on image files of {len(pids)} subject(s) of the target "
            f"cohort {cache.path} ({', '.join(pids[:5])}{', …' if len(pids) > 5 else ''}); pre-train "
            "the source on a different cohort"
        )
    if found.ids:  # ids alone: BIDS cohorts share ids like sub-01 without sharing anyone
        warnings.warn(
            f"transfer source {run} was trained on {len(found.ids)} participant id(s) that the target "
            f"cohort {cache.path} also has (e.g. {next(iter(found.ids))}), with other image files; "
            "if they are the same people, the source has seen the target's test subjects",
            UserWarning,
            stacklevel=2,
        )
