"""The report's building blocks: HTML pieces, and the sections of an interpretation folder
(attribution maps, top regions, agreement between methods, sanity checks)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

from neurocnn.report import figures
from neurocnn.report.collect import Interpretation, Run


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(df: pd.DataFrame, floats: str = "{:.3f}") -> str:
    table = df.to_html(
        index=False, border=0, float_format=lambda v: floats.format(v), na_rep="–", escape=True
    )
    return f"<div class='wide'>{table}</div>"


def _p(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def _maps_background(run: Run) -> np.ndarray | None:
    cache = Path(run.data.get("cache", ""))
    affine = run.data.get("affine")
    if not (cache / "data.npy").exists() or affine is None:
        return None
    data = np.load(cache / "data.npy", mmap_mode="r")
    return np.asarray(data[: min(len(data), 64), 0], dtype=np.float32).mean(axis=0)


def _maps(run: Run, interp: Interpretation) -> str:
    background = _maps_background(run)
    parts = []
    for name, path in interp.group_maps.items():
        if background is None:
            parts.append(_p(f"{name}: background image unavailable"))
            continue
        parts.append(_img(figures.brain_map(path, background, name), f"group map {name}"))
    return "".join(parts) or _p("No group maps in the interpretation folder.")


def _regions(interp: Interpretation, top: int = 5) -> str:
    parts = []
    classes = {k: v for k, v in interp.groups.items() if k != "conjoined"}  # file-safe name -> class
    for name, table in interp.regions.items():
        cols = [c for c in ("group", "rank", "region", "score", "mean_attribution", "fraction") if c in table]
        best = table[table["rank"] <= top][cols] if "rank" in table else table.head(top)[cols]
        if "group" in best:
            best = best.assign(group=best["group"].map(lambda k: classes.get(k, k)))
        parts.append(f"<h3>{html.escape(name)}</h3>" + _table(best))
    return "".join(parts) or _p("No region tables.")


def _agreement(interp: Interpretation) -> str:
    table = interp.tables.get("agreement")
    if table is None or table.empty:
        return _p("Fewer than two methods were run: no agreement to show.")
    methods = sorted(set(table["method_a"]) | set(table["method_b"]))
    dice = pd.DataFrame(np.eye(len(methods)), index=methods, columns=methods)
    for _, r in table.iterrows():
        dice.loc[r["method_a"], r["method_b"]] = dice.loc[r["method_b"], r["method_a"]] = r["dice"]
    return _img(
        figures.heatmap(dice, "Dice 2|A∩B|/(|A|+|B|) of thresholded conjoined maps"), "Dice matrix"
    ) + _table(table)


def _sanity(interp: Interpretation) -> str:
    parts = []
    rnd = interp.tables.get("randomisation")
    if rnd is not None and not rnd.empty:
        # as in summary.json: a constant map (no ranking to share) counts as correlation 0
        agg = (
            rnd.assign(rho=rnd["spearman"].fillna(0.0), constant=rnd["spearman"].isna())
            .groupby(["method", "randomised"])
            .agg(
                median=("rho", "median"),
                max=("rho", "max"),
                subjects=("rho", "size"),
                constant_maps=("constant", "sum"),
            )
            .reset_index()
        )
        parts.append(
            "<h3>Model randomisation (Adebayo et al. 2018)</h3>"
            + _p(
                "Spearman correlation between maps of the trained model and of the same "
                "model with randomised weights; low values mean the maps depend on what "
                "the model learned. A randomised model whose map is constant (e.g. all zero "
                "after Grad-CAM's ReLU) shares no ranking with the trained map: it counts as 0."
            )
            + _table(agg)
        )
    truth = interp.tables.get("ground_truth")
    if truth is not None and not truth.empty:
        parts.append(
            "<h3>Ground-truth localisation (synthetic cohort)</h3>"
            + _p(
                "Share of attribution mass inside each planted region against the "
                "region's share of the brain (enrichment = mass / volume)."
            )
            + _table(truth)
        )
    masked = interp.tables.get("masked_eval")
    if masked is not None and not masked.empty:
        agg = masked.groupby("mask")[["accuracy", "balanced_accuracy"]].mean().reset_index()
        parts.append(
            "<h3>Masked re-evaluation (S3)</h3>"
            + _p(
                "Each fold model on its test inputs multiplied by each group map (mean over folds)."
                if (interp.summary.get("source") or {}).get("out_of_fold", True)
                else "The checkpoint on every input it explained (possibly its training subjects) "
                "multiplied by each group map."
            )
            + _table(agg)
        )
    return "".join(parts) or _p("No sanity checks were run (`neurocnn interpret --randomisation`).")
