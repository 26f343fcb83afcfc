"""Interpret a training run (``neurocnn interpret RUN``): out-of-fold maps, group maps, tables.

Each fold's best model explains its own test subjects only (`neurocnn.interpret.runs`). Then, over
all explained subjects:

    OUT/subjects_<method>.nii.gz (+ .tsv)   4D: one volume per subject, rows of the TSV
    OUT/group/<method>_<group>.nii.gz       mean map of each class (S3; file-safe class names,
                                            summary["groups"]), and _conjoined (their sum)
    OUT/regions/<method>_<atlas>.tsv        region scores of every group map, ranked
    OUT/agreement.tsv                       Dice / rank correlation between methods' conjoined maps
    OUT/masked_eval.tsv                     each fold model on its test inputs × each group map
    OUT/randomisation.tsv                   model-randomisation test (optional)
    OUT/ground_truth.tsv                    localisation of planted regions (synthetic cohorts)
    OUT/first_layer.tsv, first_layer.png    first hidden layer analysis (optional)
    OUT/ttest_<modality>_*.nii.gz           voxel-wise t-test of the inputs (optional)
    OUT/summary.json                        everything above in one record ("kind":
                                            "neurocnn-interpretation", where the models came
                                            from, skipped folds)

Only a folder marked as an interpretation (`neurocnn.interpret.guard`) is ever replaced.

Maps are on the prepared grid with the cache's affine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from neurocnn.data.cache import swap_folder
from neurocnn.errors import NeuroCNNError
from neurocnn.interpret import agreement, guard, outputs, sanity
from neurocnn.interpret.attribution import predicted_classes
from neurocnn.interpret.perturbation import PerturbationConfig
from neurocnn.interpret.runs import (
    FoldModel,
    load_checkpoint_model,
    load_finished_models,
    pick_subjects,
)
from neurocnn.models.allocator import roomy_allocator

METHODS = ("gradcam", "hirescam", "guided_backprop", "perturbation", "occlusion", "integrated_gradients")


class InterpretOptions(BaseModel):
    """What ``interpret_run`` computes."""

    model_config = ConfigDict(extra="forbid")

    methods: tuple[str, ...] = ("gradcam", "guided_backprop", "perturbation")
    atlases: tuple[str, ...] = Field(("aal2",), description="bundled names or IMAGE:LABELS")
    top: int = Field(5, ge=1)
    repeat: int = 0
    folds: tuple[int, ...] | None = None
    subjects_per_fold: int | None = Field(None, ge=1, description="None: every test subject")
    perturbation_subjects_per_fold: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    target: Literal["predicted", "true"] = "predicted"
    group_by: Literal["label", "target"] = "label"
    thresholds: dict[str, float] = Field(default_factory=lambda: dict(agreement.DEFAULT_THRESHOLDS))
    top_percent: float | None = Field(None, gt=0, le=100)
    masked_eval: bool = True
    randomisation: bool = False
    randomisation_subjects: int = Field(8, ge=1)
    first_layer: bool = False
    voxel_stats: bool = False
    ground_truth: str | None = Field(None, description="synthetic cohort folder (cohort.json)")
    perturbation: PerturbationConfig = Field(default_factory=PerturbationConfig)
    layer: str | None = Field(None, description="Grad-CAM/HiResCAM target layer (None: the model's default)")
    seed: int = 0

    @field_validator("thresholds")
    @classmethod
    def _complete_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        """Methods not named keep their defaults, so region tables and Dice use the same cut."""
        return {**agreement.DEFAULT_THRESHOLDS, **value}


def compute_maps(
    method: str, net: nn.Module, x: Tensor, targets: Tensor, options: InterpretOptions
) -> Tensor:
    """(N, *spatial) non-negative maps of one method (integrated gradients: absolute values)."""
    from neurocnn.interpret import captum_methods
    from neurocnn.interpret.gradcam import grad_cam
    from neurocnn.interpret.guided_backprop import guided_backprop
    from neurocnn.interpret.perturbation import meaningful_perturbation

    if method in ("gradcam", "hirescam"):
        return grad_cam(net, x, targets, layer=options.layer, batch_size=options.batch_size, variant=method)
    if method == "guided_backprop":
        return guided_backprop(net, x, targets, batch_size=options.batch_size)
    if method == "perturbation":
        cfg = options.perturbation
        return meaningful_perturbation(net, x, targets, config=cfg, seed=options.seed).saliency
    if method == "occlusion":
        return captum_methods.occlusion(net, x, targets).clamp_min(0)
    if method == "integrated_gradients":
        return captum_methods.integrated_gradients(net, x, targets).abs()
    raise NeuroCNNError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


@dataclass
class Explained:
    """Per method: the subjects' maps (N, *spatial), one table row per map, seconds spent."""

    maps: dict[str, list[Tensor]] = field(default_factory=dict)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def table(self, method: str) -> pd.DataFrame:
        return pd.DataFrame(self.rows[method])

    def stacked(self, method: str) -> Tensor:
        return torch.cat(self.maps[method])


def explain(
    models: list[FoldModel], cache: Any, options: InterpretOptions, say: Callable[[str], None]
) -> Explained:
    """Every method's maps of each fold model's (chosen) test subjects."""
    data, labels, classes = cache.array(), cache.labels(), cache.classes
    ids = cache.manifest.set_index("index")["participant_id"]
    done = Explained({m: [] for m in options.methods}, {m: [] for m in options.methods})
    for position, fm in enumerate(models):
        x_all = torch.from_numpy(np.asarray(data[fm.test], dtype=np.float32))
        preds = predicted_classes(fm.net, x_all, batch_size=options.batch_size)
        for method in options.methods:
            chosen = pick_subjects(fm.test, labels, options.subjects_per_fold, start=position)
            if method == "perturbation":
                k = options.perturbation_subjects_per_fold
                chosen = pick_subjects(chosen, labels, k, start=position)
            pos = np.searchsorted(fm.test, chosen)
            targets = torch.as_tensor(labels[chosen]) if options.target == "true" else preds[pos]
            start = time.perf_counter()
            done.maps[method].append(compute_maps(method, fm.net, x_all[pos], targets, options))
            seconds = time.perf_counter() - start
            done.seconds[method] = done.seconds.get(method, 0.0) + seconds
            for i, row in enumerate(chosen):
                done.rows[method].append(
                    {
                        "index": int(row),
                        "participant_id": ids.loc[row],
                        "label": classes[labels[row]],
                        "fold": fm.name,
                        "target": classes[int(targets[i])],
                        "prediction": classes[int(preds[pos[i]])],
                    }
                )
            say(f"{fm.name}: {method} for {len(chosen)} subjects in {seconds:.1f} s")
    return done


def interpret_models(
    models: list[FoldModel],
    cache: Any,
    out: Path | str,
    options: InterpretOptions,
    *,
    progress: bool = True,
    overwrite: bool = False,
    protect: Sequence[Path | str] = (),
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Maps, group maps and analyses for a list of models over a prepared cache (module doc).

    Options are checked (atlases, ground truth, layers, classes) before any map is computed.
    Everything is written to ``<out>.partial`` and moved to ``out`` when complete, so an
    interrupted run leaves no half folder and a rerun no files of an earlier one (a method or an
    atlas no longer asked for). An earlier interpretation in ``out`` (its marker,
    `neurocnn.interpret.guard`) is replaced only with ``overwrite``; any other folder, a run
    folder above all, is never touched, nor one that is or holds what ``protect`` names.
    ``record`` (where the models come from, skipped folds) goes into the summary.
    """
    roomy_allocator()  # Meaningful Perturbation's many passes reuse freed memory (models.allocator)
    unknown = [m for m in options.methods if m not in METHODS]
    if unknown:
        raise NeuroCNNError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if cache.affine is None:
        raise NeuroCNNError(
            f"{cache.path}: subjects' grids differ, so maps have no common grid to be saved on"
        )
    final = Path(out)
    guard.check_output(final, overwrite, protect)
    checked = guard.check_options(models, cache, options)
    out = guard.start_output(final, overwrite, protect)
    say = (lambda s: print(s, flush=True)) if progress else (lambda s: None)
    start = time.perf_counter()
    done = explain(models, cache, options, say)
    brain = _brain_mask(cache.array(), np.concatenate([fm.test for fm in models]))
    truth = checked.truth
    summary: dict[str, Any] = {
        "kind": guard.KIND,
        **(record or {}),
        "classes": cache.classes,
        "folds": [fm.name for fm in models],
        "methods": {},
    }
    groups = outputs.save_maps(done, cache, out, options, summary)
    outputs.region_tables(groups, checked.atlases, out, options, truth, summary)
    conjoined = {m: g[outputs.CONJOINED] for m, g in groups.items()}
    if len(conjoined) > 1:
        agree = agreement.agreement_table(
            conjoined, thresholds=options.thresholds, top_percent=options.top_percent, mask=brain
        )
        agree.to_csv(out / "agreement.tsv", sep="\t", index=False)
        summary["agreement"] = agree.to_dict("records")
    if options.masked_eval:
        outputs.masked(models, cache, groups, out, options, summary)
    if options.randomisation:
        _randomisation(models[0], cache, done, brain, out, options, summary)
    if truth is not None:
        tables = []
        for method, g in conjoined.items():
            t = sanity.localisation(g, truth["masks"], truth["brain"])
            summary["methods"][method]["localisation"] = t.to_dict("records")
            tables.append(outputs.lead(t, method=method))
        pd.concat(tables, ignore_index=True).to_csv(out / "ground_truth.tsv", sep="\t", index=False)
        summary["planted"] = list(truth["masks"])
    if options.first_layer:
        outputs.first_layer(models, cache, out, options, summary)
    if options.voxel_stats:
        outputs.voxel_stats(models, cache, brain, out, summary)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    from neurocnn.training.runfolder import write_json

    # strict JSON (NaN as null, e.g. the SD of masked accuracy over one fold), as run folders write it
    write_json(out / "summary.json", json.loads(json.dumps(summary, default=_plain)))
    swap_folder(out, final)
    return summary


def interpret_run(
    run: Path | str,
    out: Path | str,
    options: InterpretOptions,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Interpret the finished folds of a training run; see the module docstring for the outputs.

    Failed and unfinished folds are skipped, and listed in the summary (``skipped_folds``)."""
    guard.check_output(Path(out), overwrite, [run])  # before the models are loaded
    models, cache, skipped = load_finished_models(run, repeat=options.repeat, folds=options.folds)
    if skipped and progress:
        for name, why in skipped.items():
            print(f"{name} skipped: {why}", flush=True)
    record = {
        "source": {
            "kind": "run",
            "run": str(run),
            "repeat": options.repeat,
            "out_of_fold": True,
            "description": "each fold's best model on its own test subjects (out-of-fold)",
        },
        "skipped_folds": skipped,
    }
    return interpret_models(
        models,
        cache,
        out,
        options,
        progress=progress,
        overwrite=overwrite,
        protect=[run, cache.path],
        record=record,
    )


def interpret_checkpoint(
    checkpoint: Path | str,
    cache_path: Path | str,
    out: Path | str,
    options: InterpretOptions,
    *,
    model: str,
    model_options: dict[str, Any] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Interpret one checkpoint of ``model`` over every labelled subject of a cache (no run folder:
    nothing guards against explaining the model's training subjects)."""
    guard.check_output(Path(out), overwrite, [checkpoint, cache_path])
    models, cache = load_checkpoint_model(checkpoint, cache_path, model, model_options)
    record = {
        "source": {
            "kind": "checkpoint",
            "checkpoint": str(checkpoint),
            "cache": str(cache_path),
            "out_of_fold": False,
            "description": "one checkpoint on every labelled subject of the cache (may include the "
            "subjects it was trained on)",
        },
        "skipped_folds": {},
    }
    return interpret_models(
        models,
        cache,
        out,
        options,
        progress=progress,
        overwrite=overwrite,
        protect=[checkpoint, cache_path],
        record=record,
    )


def _randomisation(fm, cache, done, brain, out, options, summary) -> None:  # type: ignore[no-untyped-def]
    """Model-randomisation test of every method on the first explained subjects of one fold."""
    data, classes, tables = cache.array(), cache.classes, []
    for method in options.methods:
        table = done.table(method)
        mine = np.flatnonzero(table["fold"].to_numpy() == fm.name)[: options.randomisation_subjects]
        if len(mine) == 0:
            continue
        rows = table["index"].to_numpy()[mine]
        x = torch.from_numpy(np.asarray(data[rows], dtype=np.float32))
        targets = torch.as_tensor([classes.index(t) for t in table["target"].to_numpy()[mine]])

        def run(net: nn.Module, xx: Tensor, tt: Tensor, _m: str = method) -> Tensor:
            return compute_maps(_m, net, xx, tt, options)

        t = sanity.model_randomisation(
            run, fm.net, x, targets, mask=brain, seed=options.seed, trained_maps=done.stacked(method)[mine]
        )
        tables.append(outputs.lead(t, method=method, index=rows[t["subject"].to_numpy()]))
        # a constant randomised map (e.g. all zero after Grad-CAM's ReLU) has no ranking to share
        # with the trained map: its correlation is undefined and counted as 0 in the summary
        rho = t["spearman"].fillna(0.0)
        info = summary["methods"][method]
        info["randomisation_spearman_median"] = float(rho.median())
        info["randomisation_spearman_max"] = float(rho.max())
        info["randomisation_constant_maps"] = int(t["spearman"].isna().sum())
        info["randomisation_subjects"] = len(t)
    pd.concat(tables, ignore_index=True).to_csv(out / "randomisation.tsv", sep="\t", index=False)


def _brain_mask(data: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Voxels that are non-zero in any channel of any of the subjects (prepared caches are masked)."""
    mask = np.zeros(data.shape[2:], bool)
    for r in rows:
        mask |= np.any(np.asarray(data[r]) != 0, axis=0)
    return mask


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
