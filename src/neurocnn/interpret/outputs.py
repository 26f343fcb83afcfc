"""The files `neurocnn interpret` writes besides the maps' computation: subject and group maps,
region tables per atlas, masked re-evaluation, first-layer analysis and voxel-wise statistics
(the steps of `neurocnn.interpret.pipeline.interpret_models`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from neurocnn.interpret import group, masked_eval, regions, sanity

if TYPE_CHECKING:
    from neurocnn.interpret.pipeline import Explained, InterpretOptions

# methods whose subject maps share an absolute scale (averaged unscaled into group maps)
ABSOLUTE_METHODS = ("perturbation",)
CONJOINED = "conjoined"  # the group name of the sum of the class maps (S3)


def group_keys(classes: list[str]) -> dict[str, str]:
    """A file-safe group name per class (``AD/MCI`` -> ``AD_MCI``), distinct from each other (also
    on case-insensitive file systems) and from ``conjoined``; the summary keeps the mapping."""
    keys: dict[str, str] = {}
    taken = {CONJOINED}
    for i, c in enumerate(classes):
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(c)).strip("._") or f"class{i}"
        key = base
        if key.lower() in taken:
            key = f"{base}_{i}"
        while key.lower() in taken:
            key += "_"
        taken.add(key.lower())
        keys[c] = key
    return keys


def lead(table: pd.DataFrame, **columns: Any) -> pd.DataFrame:
    """``table`` with ``columns`` inserted first, in order."""
    for i, (name, value) in enumerate(columns.items()):
        table.insert(i, name, value)
    return table


def save_maps(
    done: Explained, cache: Any, out: Path, options: InterpretOptions, summary: dict[str, Any]
) -> dict[str, dict[str, np.ndarray]]:
    """Subject maps and group maps of every method, written; returns ``{method: {group: map}}``
    (groups: `group_keys` of the classes, and ``conjoined``)."""
    classes, groups = cache.classes, {}
    keys = group_keys(list(classes))
    summary["groups"] = {**{keys[c]: c for c in classes}, CONJOINED: "conjoined (sum of the class maps)"}
    for method in options.methods:
        maps, table = done.stacked(method).numpy(), done.table(method)
        group.save_subject_maps(maps, cache.affine, out / f"subjects_{method}.nii.gz", table)
        y = table[options.group_by].map({c: i for i, c in enumerate(classes)}).to_numpy()
        # Meaningful Perturbation's saliency (1 − mask) is already on an absolute [0, 1] scale:
        # averaged as it is, a subject whose mask barely moved weighs little; the gradient methods'
        # magnitudes differ between subjects, so each of their maps is scaled to a maximum of 1
        by_class = group.group_maps(maps, y, classes, normalise=method not in ABSOLUTE_METHODS)
        g = {keys[c]: m for c, m in by_class.items()}
        g[CONJOINED] = group.conjoined_map(by_class)
        for name, m in g.items():
            group.save_map(m, cache.affine, out / "group" / f"{method}_{name}.nii.gz")
        groups[method] = g
        seconds = done.seconds.get(method, 0.0)
        summary["methods"][method] = {
            "subjects": len(table),
            "seconds": round(seconds, 1),
            "seconds_per_subject": round(seconds / max(1, len(table)), 2),
            "regions": {},
        }
    return groups


def region_tables(
    groups: dict[str, dict[str, np.ndarray]],
    atlases: dict[str, regions.AtlasOnGrid],
    out: Path,
    options: InterpretOptions,
    truth: dict[str, Any] | None,
    summary: dict[str, Any],
) -> None:
    """Region scores of every group map for every atlas, loaded by spec (`guard.check_options`:
    those asked for and the planted regions' atlas)."""
    (out / "regions").mkdir(exist_ok=True)
    for spec, atlas in atlases.items():
        for method, maps in groups.items():
            threshold = options.thresholds.get(method, 0.5)
            full = pd.concat(
                [
                    lead(
                        regions.region_scores(m, atlas, threshold=threshold, top_percent=options.top_percent),
                        group=name,
                    )
                    for name, m in maps.items()
                ],
                ignore_index=True,
            )
            full.to_csv(out / "regions" / f"{method}_{atlas.name}.tsv", sep="\t", index=False)
            conj = full[full["group"] == CONJOINED]
            top = conj[conj["rank"] <= options.top][["rank", "region", "score"]]
            summary["methods"][method]["regions"][atlas.name] = top.to_dict("records")
            if truth is not None and spec == truth["atlas"]:
                info = summary["methods"][method]
                info["planted_ranks"] = sanity.region_ranks(conj, list(truth["masks"]))
                # S3's score saturates (ties) when the threshold keeps most of the brain; the mean
                # attribution per region needs no threshold and does not favour large regions
                info["planted_ranks_mean"] = sanity.region_ranks(
                    conj, list(truth["masks"]), by="mean_attribution"
                )


def masked(models, cache, groups, out, options, summary) -> None:  # type: ignore[no-untyped-def]
    """Each fold model on its test inputs multiplied by each group map (S3)."""
    data, labels = cache.array(), cache.labels()
    masks = {f"{m}:{g}": v for m, gs in groups.items() for g, v in gs.items()}
    tables = []
    for fm in models:
        x = torch.from_numpy(np.asarray(data[fm.test], dtype=np.float32))
        t = masked_eval.masked_accuracy(fm.net, x, labels[fm.test], masks, batch_size=options.batch_size)
        tables.append(lead(t, fold=fm.name))
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(out / "masked_eval.tsv", sep="\t", index=False)
    stats = table.groupby("mask", sort=False)["accuracy"].agg(["mean", "std"]).reset_index()
    summary["masked_eval"] = stats.to_dict("records")


def first_layer(models, cache, out, options, summary) -> None:  # type: ignore[no-untyped-def]
    """First hidden layer analysis per fold model on its test subjects (features differ by model)."""
    from neurocnn.interpret.first_layer import compare_features, first_layer_features, plot_first_layer

    data, labels, tables = cache.array(), cache.labels(), []
    for fm in models:
        x = torch.from_numpy(np.asarray(data[fm.test], dtype=np.float32))
        features = first_layer_features(fm.net, x, batch_size=options.batch_size)
        t = compare_features(features, labels[fm.test], cache.classes)
        tables.append(lead(t, fold=fm.name, layer=features.layer))
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(out / "first_layer.tsv", sep="\t", index=False)
    plot_first_layer(table[table["fold"] == models[0].name], out / "first_layer.png")
    summary["first_layer_significant"] = int(table["significant"].sum())


def voxel_stats(models, cache, brain, out, summary) -> None:  # type: ignore[no-untyped-def]
    """Voxel-wise t-test of each input modality between the true classes (S4 Fig. 1)."""
    from neurocnn.interpret.voxel_stats import voxelwise_ttest

    data, labels = cache.array(), cache.labels()
    rows = np.sort(np.concatenate([fm.test for fm in models]))
    for c in range(data.shape[1]):
        test = voxelwise_ttest(np.asarray(data[rows, c]), labels[rows], mask=brain)
        prefix = f"ttest_{cache.modalities[c]}" if c < len(cache.modalities) else f"ttest_{c}"
        test.save(out, cache.affine, prefix=prefix)
        summary.setdefault("voxel_stats", {})[prefix] = int(test.significant.sum())


def load_atlas(spec: str, shape: tuple[int, ...], affine: np.ndarray) -> regions.AtlasOnGrid:
    """``name`` or ``image.nii.gz:labels.csv``."""
    image, sep, table = spec.partition(":")
    if sep and image.endswith((".nii", ".nii.gz")):
        return regions.atlas_on_grid(image, shape, affine, labels=table)
    return regions.atlas_on_grid(spec, shape, affine)
