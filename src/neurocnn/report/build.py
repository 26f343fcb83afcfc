"""Assemble the report: one self-contained HTML file (images embedded as base64, no external links).

Every section has a stable id (`SECTIONS`) so that tests and the browser check can find it; a
section whose inputs are absent says so instead of disappearing.
"""

from __future__ import annotations

import base64
import html
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neurocnn import __version__
from neurocnn.errors import NeuroCNNError
from neurocnn.report import figures
from neurocnn.report.collect import Interpretation, Run, read_interpretation, read_run

SECTIONS = {
    "summary": "Summary",
    "cohort": "Cohort",
    "preparation": "Preparation",
    "training": "Model and training",
    "metrics": "Metrics",
    "roc": "ROC curves",
    "learning": "Learning curves",
    "confusion": "Confusion matrix",
    "comparison": "Comparison with other runs",
    "maps": "Attribution maps",
    "regions": "Top regions per atlas",
    "agreement": "Agreement between methods",
    "sanity": "Sanity checks",
}
GENERATOR = "neurocnn report"
# counts images that failed to decode, for the headless-browser check (neurocnn.report.check)
BROKEN_IMAGES_JS = (
    "window.addEventListener('load',function(){var n=0;for(var i of document.images)"
    "{if(!i.complete||i.naturalWidth===0)n++;}document.body.setAttribute('data-broken-images',n);"
    "document.body.setAttribute('data-images',document.images.length);});"
)
HEADLINE = ("balanced_accuracy", "auc", "accuracy", "sensitivity", "specificity", "mcc")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d2430;
background:#f6f7f9}main{max-width:1100px;margin:auto;padding:1rem 2rem 4rem}
header{background:#1d2430;color:#fff;padding:1.2rem 2rem}header h1{margin:0;font-size:1.5rem}
nav{background:#fff;border-bottom:1px solid #dde;padding:.5rem 2rem;position:sticky;top:0;z-index:2}
nav a{margin-right:1rem;color:#2456a4;text-decoration:none;font-size:.9rem}
section{background:#fff;border:1px solid #dde;border-radius:8px;margin:1.2rem 0;padding:.8rem 1.4rem}
h2{font-size:1.15rem;border-bottom:1px solid #eee;padding-bottom:.3rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}td,th{border:1px solid #dde;
padding:.25rem .55rem;text-align:right}th{background:#eef1f6}td:first-child,th:first-child{text-align:left}
div.wide{overflow-x:auto}
img{max-width:100%;height:auto;display:block;margin:.5rem 0}.note{color:#667;font-size:.85rem}
.big{font-size:1.3rem;font-weight:600}
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(df: pd.DataFrame, floats: str = "{:.3f}") -> str:
    table = df.to_html(
        index=False, border=0, float_format=lambda v: floats.format(v), na_rep="–", escape=True
    )
    return f"<div class='wide'>{table}</div>"


def _p(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def _ci(entry: dict[str, Any]) -> str:
    value, (lo, hi) = entry["value"], entry["ci95"]
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def _metrics_table(runs: Sequence[Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        pooled, ms = run.summary.get("pooled", {}), run.summary.get("mean_std", {})
        row: dict[str, Any] = {"run": run.name, "model": run.model, "folds": run.summary.get("folds_done")}
        for m in HEADLINE:
            if m in pooled:
                row[f"{m} (95% CI)"] = _ci(pooled[m])
            if m in ms:
                row[f"{m} folds mean ± sd"] = f"{ms[m]['mean']:.3f} ± {ms[m]['std']:.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


def _cohort(run: Run) -> str:
    manifest_path = Path(run.data.get("cache", "")) / "manifest.tsv"
    if not manifest_path.exists():
        return _p(f"The cohort's cache ({manifest_path.parent}) is not reachable from here.")
    m = pd.read_csv(manifest_path, sep="\t", dtype={"participant_id": str, "label": str})
    m = m[m["label_index"] >= 0]
    rows = []
    for label, g in m.groupby("label"):
        row: dict[str, Any] = {
            "class": label,
            "subjects": len(g),
            "participants": g["participant_id"].nunique(),
        }
        for c in run.data.get("covariates", []) or [c for c in ("age", "sex", "site") if c in m]:
            if c not in g:
                continue
            col = g[c]
            if pd.api.types.is_numeric_dtype(col):
                row[c] = f"{col.mean():.1f} ± {col.std():.1f}"
            else:
                row[c] = ", ".join(f"{k}: {v}" for k, v in col.value_counts().items())
        rows.append(row)
    mods = ", ".join(run.data.get("modalities", []))
    shape = run.data.get("shape")
    return _p(f"Cache {manifest_path.parent}; modalities {mods}; array shape {shape}.") + _table(
        pd.DataFrame(rows)
    )


def _kv(d: dict[str, Any]) -> str:
    return _table(pd.DataFrame({"parameter": list(d), "value": [str(v) for v in d.values()]}))


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
    for name, table in interp.regions.items():
        cols = [c for c in ("group", "rank", "region", "score", "mean_attribution", "fraction") if c in table]
        best = table[table["rank"] <= top][cols] if "rank" in table else table.head(top)[cols]
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
            + _p("Each fold model on its test inputs multiplied by each group map (mean over folds).")
            + _table(agg)
        )
    return "".join(parts) or _p("No sanity checks were run (`neurocnn interpret --randomisation`).")


def _comparison(runs: Sequence[Run]) -> str:
    if len(runs) < 2:
        return _p("Only one run was given: pass baseline runs too (`neurocnn report RUN BASELINE...`).")
    from neurocnn.evaluation.compare import compare_runs

    try:
        result = compare_runs([r.path for r in runs])
    except NeuroCNNError as exc:
        return _p(f"The runs cannot be compared: {exc}")
    legend = _p(
        "p_ttest: corrected resampled t-test over folds (Nadeau & Bengio 2003); p_permutation: "
        "paired permutation test on the pooled out-of-fold predictions; p_mcnemar (accuracy) and "
        "p_delong (AUC): for a single independent test set."
    )
    notes = legend + "".join(_p(n) for n in result.notes)
    return "<h3>Runs</h3>" + _table(result.runs) + "<h3>Pairs</h3>" + _table(result.pairs) + notes


def build_report(
    runs: Sequence[Path | str],
    out: Path | str,
    *,
    interpretation: Path | str | None = None,
    title: str | None = None,
) -> Path:
    """Write the HTML report of ``runs`` (the first is the main run) to ``out``.

    The interpretation folder defaults to ``RUN/interpret`` of the first run when it exists.
    """
    if not runs:
        raise NeuroCNNError("give at least one run folder")
    loaded = [read_run(r) for r in runs]
    names = Counter(run.name for run in loaded)
    for run in loaded:  # same folder names under different parents: say which parent
        if names[run.name] > 1:
            run.name = f"{run.path.parent.name}/{run.path.name}"
    main = loaded[0]
    interp = read_interpretation(interpretation or main.path / "interpret")
    classes = main.classes
    body: dict[str, str] = {}
    pooled = main.summary.get("pooled", {})
    headline = " · ".join(f"{m.replace('_', ' ')} {_ci(pooled[m])}" for m in HEADLINE[:2] if m in pooled)
    perm = (
        " (labels permuted: a leakage check, expected at chance)"
        if main.summary.get("permuted_labels")
        else ""
    )
    body["summary"] = f"<p class='big'>{html.escape(main.name)}: {html.escape(headline)}</p>" + _p(
        f"{main.summary.get('n_subjects', '?')} subjects, "
        f"{main.summary.get('folds_done', '?')} folds{perm}; 95% CIs by bootstrap "
        "over participants of the pooled out-of-fold predictions."
    )
    body["cohort"] = _cohort(main)
    body["preparation"] = (
        _kv(main.data.get("params", {})) if main.data.get("params") else _p("No preparation record.")
    )
    cfg = {k: v for k, v in main.config.items() if k not in ("cache",)}
    env = {
        k: main.environment.get(k)
        for k in ("neurocnn", "torch", "lightning", "git_commit", "host", "command")
        if k in main.environment
    }
    body["training"] = _kv({**{k: v for k, v in cfg.items()}, **{f"env.{k}": v for k, v in env.items()}})
    per_fold = pd.DataFrame(main.summary.get("per_fold", []))
    body["metrics"] = (
        _table(_metrics_table(loaded))
        + "<h3>Per fold</h3>"
        + (_table(per_fold) if not per_fold.empty else _p("no per-fold metrics"))
    )
    body["roc"] = (
        _img(figures.roc([(r.name, r.predictions) for r in loaded], classes), "ROC curves")
        if len(classes) == 2
        else _p("ROC curves are drawn for two classes.")
    )
    body["learning"] = (
        _img(figures.learning_curves(main.histories), "learning curves")
        if main.histories
        else _p("No per-epoch history (a baseline run).")
    )
    body["confusion"] = _img(figures.confusion(main.predictions, classes), "confusion matrix")
    body["comparison"] = _comparison(loaded)
    missing = _p("No interpretation folder: run `neurocnn interpret RUN` first.")
    body["maps"] = _maps(main, interp) if interp else missing
    body["regions"] = _regions(interp) if interp else missing
    body["agreement"] = _agreement(interp) if interp else missing
    body["sanity"] = _sanity(interp) if interp else missing

    title = title or f"neurocnn report: {main.name}"
    nav = "".join(f'<a href="#{k}">{v}</a>' for k, v in SECTIONS.items())
    sections = "".join(f'<section id="{k}"><h2>{v}</h2>{body[k]}</section>' for k, v in SECTIONS.items())
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='generator' content='{GENERATOR}'><title>{html.escape(title)}"
        f"</title><style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1>"
        f"<div>{html.escape(', '.join(str(r.path) for r in loaded))} · neurocnn {__version__} · "
        f"{time.strftime('%Y-%m-%d %H:%M')}</div></header><nav>{nav}</nav><main>{sections}</main>"
        f"<script>{BROKEN_IMAGES_JS}</script></body></html>"
    )
    out = Path(out)
    if out.exists() and GENERATOR not in out.read_text(errors="replace")[:2000]:
        raise NeuroCNNError(f"{out} exists and is not a neurocnn report; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
