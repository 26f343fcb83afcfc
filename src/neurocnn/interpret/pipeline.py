"""Interpret a training run (``neurocnn interpret RUN``): out-of-fold maps, group maps, tables.

Each fold's best model explains its own test subjects only (out-of-fold maps: no subject is
explained by a model that trained on it). Then, over all explained subjects:

    OUT/subjects_<method>.nii.gz (+ .tsv)   4D: one volume per subject, rows of the TSV
    OUT/group/<method>_<class>.nii.gz       mean map of each class (S3), and _conjoined (their sum)
    OUT/regions/<method>_<atlas>.tsv        region scores of every group map, ranked
    OUT/agreement.tsv                       Dice / rank correlation between methods' conjoined maps
    OUT/masked_eval.tsv                     each fold model on its test inputs × each group map
    OUT/randomisation.tsv                   model-randomisation test (optional)
    OUT/ground_truth.tsv                    localisation of planted regions (synthetic cohorts)
    OUT/first_layer.tsv, first_layer.png    first hidden layer analysis (optional)
    OUT/ttest_*.nii.gz                      voxel-wise t-test of the inputs (optional)
    OUT/summary.json                        everything above in one record

Maps are on the prepared grid with the cache's affine.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from neurocnn.errors import NeuroCNNError
from neurocnn.interpret import agreement, group, masked_eval, regions, sanity
from neurocnn.interpret.attribution import predicted_classes
from neurocnn.interpret.perturbation import PerturbationConfig

METHODS = ("gradcam", "guided_backprop", "perturbation", "occlusion", "integrated_gradients")


class InterpretOptions(BaseModel):
    """What ``interpret_run`` computes."""

    model_config = ConfigDict(extra="forbid")

    methods: tuple[str, ...] = ("gradcam", "guided_backprop", "perturbation")
    atlases: tuple[str, ...] = ("aal2",)
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
    seed: int = 0


@dataclass
class FoldModel:
    """One trained model and the cache rows it may explain (its test subjects)."""

    name: str
    net: nn.Module
    test: np.ndarray


def load_run_models(run: Path | str, *, repeat: int = 0, folds: tuple[int, ...] | None = None):  # type: ignore[no-untyped-def]
    """The best model of each finished outer fold of a run, with its test rows, and the cache."""
    from neurocnn.data.cache import open_cache
    from neurocnn.data.splits import load_splits, split_indices
    from neurocnn.training.module import build_network
    from neurocnn.training.runfolder import SPLITS, RunFolder, fold_name
    from neurocnn.training.transfer import load_state

    rf = RunFolder(Path(run))
    config = rf.config()
    cache = open_cache(config.cache)
    table = load_splits(rf.path / SPLITS)
    outer = table[(table["inner"] == -1) & (table["repeat"] == repeat)]
    if outer.empty:
        raise NeuroCNNError(f"{rf.path}: no outer splits of repeat {repeat}")
    models: list[FoldModel] = []
    for fold in sorted(int(f) for f in outer["fold"].unique()):
        if folds is not None and fold not in folds:
            continue
        ckpt = rf.fold_dir(repeat, fold) / "best.ckpt"
        if not ckpt.exists():
            continue
        net = build_network(config, cache.shape, len(cache.classes))
        net.load_state_dict(load_state(ckpt))
        test = np.sort(split_indices(table, repeat, fold)["test"])
        models.append(FoldModel(fold_name(repeat, fold), net.eval(), test))
    if not models:
        raise NeuroCNNError(
            f"{rf.path}: no finished fold with best.ckpt (repeat {repeat}); train with `neurocnn cv`, "
            "or give --checkpoint"
        )
    return models, cache


def compute_maps(
    method: str, net: nn.Module, x: Tensor, targets: Tensor, options: InterpretOptions, *, seed: int = 0
) -> Tensor:
    """(N, *spatial) maps of one method (non-negative for all but integrated gradients)."""
    from neurocnn.interpret import captum_methods
    from neurocnn.interpret.gradcam import grad_cam
    from neurocnn.interpret.guided_backprop import guided_backprop
    from neurocnn.interpret.perturbation import meaningful_perturbation

    if method == "gradcam":
        return grad_cam(net, x, targets, batch_size=options.batch_size)
    if method == "guided_backprop":
        return guided_backprop(net, x, targets, batch_size=options.batch_size)
    if method == "perturbation":
        return meaningful_perturbation(net, x, targets, config=options.perturbation, seed=seed).saliency
    if method == "occlusion":
        return captum_methods.occlusion(net, x, targets).clamp_min(0)
    if method == "integrated_gradients":
        return captum_methods.integrated_gradients(net, x, targets).abs()
    raise NeuroCNNError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def _pick(rows: np.ndarray, labels: np.ndarray, k: int | None) -> np.ndarray:
    """The first k rows, alternating between classes (deterministic, balanced)."""
    if k is None or k >= len(rows):
        return rows
    by_class = [list(rows[labels[rows] == c]) for c in np.unique(labels[rows])]
    out: list[int] = []
    while len(out) < k:
        for members in by_class:
            if members and len(out) < k:
                out.append(members.pop(0))
    return np.sort(np.asarray(out, dtype=np.int64))


def interpret_models(
    models: list[FoldModel], cache: Any, out: Path | str, options: InterpretOptions, *, progress: bool = True
) -> dict[str, Any]:
    """Maps, group maps and analyses for a list of models over a prepared cache (see module doc)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [m for m in options.methods if m not in METHODS]
    if unknown:
        raise NeuroCNNError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    affine = cache.affine
    if affine is None:
        raise NeuroCNNError(
            f"{cache.path}: subjects' grids differ, so maps have no common grid to be saved on"
        )
    data, labels, classes = cache.array(), cache.labels(), cache.classes
    manifest = cache.manifest.set_index("index")
    say = (lambda s: print(s, flush=True)) if progress else (lambda s: None)
    start = time.perf_counter()
    maps: dict[str, list[Tensor]] = {m: [] for m in options.methods}
    rows: dict[str, list[dict]] = {m: [] for m in options.methods}
    first_layer_tables, masked_tables, random_tables = [], [], []
    timings: dict[str, float] = {m: 0.0 for m in options.methods}
    for fm in models:
        x_all = torch.from_numpy(np.asarray(data[fm.test], dtype=np.float32))
        preds = predicted_classes(fm.net, x_all, batch_size=options.batch_size)
        for method in options.methods:
            k = options.perturbation_subjects_per_fold if method == "perturbation" else None
            chosen = _pick(_pick(fm.test, labels, options.subjects_per_fold), labels, k)
            pos = np.searchsorted(fm.test, chosen)
            x = x_all[pos]
            targets = torch.as_tensor(labels[chosen]) if options.target == "true" else preds[pos]
            t0 = time.perf_counter()
            m = compute_maps(method, fm.net, x, targets, options, seed=options.seed)
            timings[method] += time.perf_counter() - t0
            maps[method].append(m)
            for i, row in enumerate(chosen):
                rows[method].append(
                    {
                        "index": int(row),
                        "participant_id": manifest.loc[row, "participant_id"],
                        "label": classes[labels[row]],
                        "fold": fm.name,
                        "target": classes[int(targets[i])],
                        "prediction": classes[int(preds[pos[i]])],
                    }
                )
            say(f"{fm.name}: {method} for {len(chosen)} subjects in {time.perf_counter() - t0:.1f} s")
        if options.first_layer:
            first_layer_tables.append(_first_layer(fm, x_all, labels[fm.test], classes))
    brain = _brain_mask(data, np.concatenate([fm.test for fm in models]))
    summary: dict[str, Any] = {"classes": classes, "folds": [fm.name for fm in models], "methods": {}}
    conjoined: dict[str, np.ndarray] = {}
    groups_all: dict[str, dict[str, np.ndarray]] = {}
    for method in options.methods:
        all_maps = torch.cat(maps[method]).numpy()
        table = pd.DataFrame(rows[method])
        group.save_subject_maps(all_maps, affine, out / f"subjects_{method}.nii.gz", table)
        key = "label" if options.group_by == "label" else "target"
        y = table[key].map({c: i for i, c in enumerate(classes)}).to_numpy()
        groups = group.group_maps(all_maps, y, classes)
        groups["conjoined"] = group.conjoined_map(groups)
        groups_all[method] = groups
        conjoined[method] = groups["conjoined"]
        for name, g in groups.items():
            group.save_map(g, affine, out / "group" / f"{method}_{name}.nii.gz")
        summary["methods"][method] = {
            "subjects": len(table),
            "seconds": round(timings[method], 1),
            "seconds_per_subject": round(timings[method] / max(1, len(table)), 2),
            "regions": {},
        }
    atlases = list(options.atlases)
    truth = _truth(options, cache)
    if truth is not None and truth["atlas"] and truth["atlas"] not in atlases:
        atlases.append(truth["atlas"])
    shape = tuple(data.shape[2:])
    for atlas_name in atlases:
        atlas = _load_atlas(atlas_name, shape, affine)
        for method, groups in groups_all.items():
            tables = []
            for gname, g in groups.items():
                t = regions.region_scores(
                    g, atlas, threshold=options.thresholds.get(method, 0.5), top_percent=options.top_percent
                )
                t.insert(0, "group", gname)
                tables.append(t)
            full = pd.concat(tables, ignore_index=True)
            (out / "regions").mkdir(exist_ok=True)
            full.to_csv(out / "regions" / f"{method}_{atlas.name}.tsv", sep="\t", index=False)
            top = full[(full["group"] == "conjoined") & (full["rank"] <= options.top)]
            summary["methods"][method]["regions"][atlas.name] = top[["rank", "region", "score"]].to_dict(
                "records"
            )
            if truth is not None and atlas_name == truth["atlas"]:
                conj = full[full["group"] == "conjoined"]
                summary["methods"][method]["planted_ranks"] = sanity.region_ranks(
                    conj, list(truth["regions"])
                )
    if len(conjoined) > 1:
        agree = agreement.agreement_table(
            conjoined, thresholds=options.thresholds, top_percent=options.top_percent, mask=brain
        )
        agree.to_csv(out / "agreement.tsv", sep="\t", index=False)
        summary["agreement"] = agree.to_dict("records")
    if options.masked_eval:
        for fm in models:
            x_all = torch.from_numpy(np.asarray(data[fm.test], dtype=np.float32))
            masks = {f"{m}:{g}": v for m, gs in groups_all.items() for g, v in gs.items()}
            t = masked_eval.masked_accuracy(
                fm.net, x_all, labels[fm.test], masks, batch_size=options.batch_size
            )
            t.insert(0, "fold", fm.name)
            masked_tables.append(t)
        masked = pd.concat(masked_tables, ignore_index=True)
        masked.to_csv(out / "masked_eval.tsv", sep="\t", index=False)
        summary["masked_eval"] = (
            masked.groupby("mask", sort=False)["accuracy"]
            .agg(["mean", "std"])
            .reset_index()
            .to_dict("records")
        )
    if options.randomisation:
        random_tables = _randomisation(models[0], data, classes, options, maps, rows, brain)
        rnd = pd.concat(random_tables, ignore_index=True)
        rnd.to_csv(out / "randomisation.tsv", sep="\t", index=False)
        for method, part in rnd.groupby("method"):
            summary["methods"][method]["randomisation_spearman_median"] = float(part["spearman"].median())
            summary["methods"][method]["randomisation_spearman_max"] = float(part["spearman"].max())
    if truth is not None:
        gt = []
        for method, g in conjoined.items():
            t = sanity.localisation(g, truth["masks"], truth["brain"])
            t.insert(0, "method", method)
            gt.append(t)
            summary["methods"][method]["localisation"] = t.to_dict("records")
        pd.concat(gt, ignore_index=True).to_csv(out / "ground_truth.tsv", sep="\t", index=False)
        summary["planted"] = list(truth["regions"])
    if first_layer_tables:
        fl = pd.concat(first_layer_tables, ignore_index=True)
        fl.to_csv(out / "first_layer.tsv", sep="\t", index=False)
        from neurocnn.interpret.first_layer import plot_first_layer

        plot_first_layer(fl[fl["fold"] == models[0].name], out / "first_layer.png")
        summary["first_layer_significant"] = int(fl["significant"].sum())
    if options.voxel_stats:
        from neurocnn.interpret.voxel_stats import voxelwise_ttest

        rows_used = np.concatenate([fm.test for fm in models])
        for c in range(data.shape[1]):
            test = voxelwise_ttest(np.asarray(data[rows_used, c]), labels[rows_used], mask=brain)
            prefix = f"ttest_{cache.modalities[c]}" if c < len(cache.modalities) else f"ttest_{c}"
            test.save(out, affine, prefix=prefix)
            summary.setdefault("voxel_stats", {})[prefix] = int(test.significant.sum())
    summary["seconds"] = round(time.perf_counter() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_plain) + "\n")
    return summary


def interpret_run(
    run: Path | str, out: Path | str, options: InterpretOptions, *, progress: bool = True
) -> dict[str, Any]:
    """Interpret the finished folds of a training run; see the module docstring for the outputs."""
    models, cache = load_run_models(run, repeat=options.repeat, folds=options.folds)
    return interpret_models(models, cache, out, options, progress=progress)


def interpret_checkpoint(
    checkpoint: Path | str,
    cache_path: Path | str,
    out: Path | str,
    options: InterpretOptions,
    *,
    model: str,
    model_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Interpret one checkpoint (or state dict) of ``model`` over every subject of a cache.

    The fallback when there is no run folder; nothing guards against explaining training subjects.
    """
    from neurocnn.data.cache import open_cache
    from neurocnn.models import build
    from neurocnn.training.transfer import load_state

    cache = open_cache(cache_path)
    spatial = tuple(int(s) for s in cache.shape[2:])
    net = build(
        model,
        in_channels=int(cache.shape[1]),
        num_classes=len(cache.classes),
        input_shape=spatial,
        **(model_options or {}),
    )
    net.load_state_dict(load_state(Path(checkpoint)))
    rows = cache.manifest["index"].to_numpy(dtype=np.int64)
    rows = rows[cache.labels()[rows] >= 0]
    return interpret_models(
        [FoldModel("checkpoint", net.eval(), np.sort(rows))], cache, out, options, progress=progress
    )


def _first_layer(fm: FoldModel, x: Tensor, y: np.ndarray, classes: list[str]) -> pd.DataFrame:
    from neurocnn.interpret.first_layer import compare_features, first_layer_features

    feats = first_layer_features(fm.net, x)
    t = compare_features(feats, y, classes)
    t.insert(0, "fold", fm.name)
    t.insert(1, "layer", feats.layer)
    return t


def _randomisation(fm, data, classes, options, maps, rows, brain) -> list[pd.DataFrame]:  # type: ignore[no-untyped-def]
    """Model-randomisation test of every method on the first subjects of one fold."""
    out = []
    for method in options.methods:
        table = pd.DataFrame(rows[method])
        mine = np.flatnonzero(table["fold"].to_numpy() == fm.name)[: options.randomisation_subjects]
        if len(mine) == 0:
            continue
        idx = table["index"].to_numpy()[mine]
        x = torch.from_numpy(np.asarray(data[idx], dtype=np.float32))
        targets = torch.as_tensor([classes.index(t) for t in table["target"].to_numpy()[mine]])
        trained = torch.cat(maps[method])[torch.as_tensor(mine)]

        def run(net: nn.Module, xx: Tensor, tt: Tensor, _m: str = method) -> Tensor:
            return compute_maps(_m, net, xx, tt, options, seed=options.seed)

        t = sanity.model_randomisation(
            run, fm.net, x, targets, mask=brain, seed=options.seed, trained_maps=trained
        )
        t.insert(0, "method", method)
        t["index"] = idx[t["subject"].to_numpy()]
        out.append(t)
    return out


def _brain_mask(data: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Voxels that are non-zero in any channel of any of the subjects (prepared caches are masked)."""
    mask = np.zeros(data.shape[2:], bool)
    for r in rows:
        mask |= np.any(np.asarray(data[r]) != 0, axis=0)
    return mask


def _load_atlas(spec: str, shape: tuple[int, ...], affine: np.ndarray) -> regions.AtlasOnGrid:
    """``name`` or ``image.nii.gz:labels.csv``."""
    if ":" in spec and spec.split(":", 1)[0].endswith((".nii", ".nii.gz")):
        image, table = spec.split(":", 1)
        return regions.atlas_on_grid(image, shape, affine, labels=table)
    return regions.atlas_on_grid(spec, shape, affine)


def _truth(options: InterpretOptions, cache: Any) -> dict[str, Any] | None:
    if not options.ground_truth:
        return None
    masks, brain, effects = sanity.planted_regions(options.ground_truth, tuple(cache.shape[2:]), cache.affine)
    return {"masks": masks, "brain": brain, "regions": list(masks), "atlas": sanity.atlas_for(effects)}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
