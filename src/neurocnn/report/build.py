"""Assemble the report: one self-contained HTML file (images embedded as base64, no external links).

Every section has a stable id (`SECTIONS`) so that tests and the browser check can find it; a
section whose inputs are absent says so instead of disappearing.
"""

from __future__ import annotations

import html
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from neurocnn import __version__
from neurocnn.errors import NeuroCNNError
from neurocnn.report import figures
from neurocnn.report.collect import Run, read_interpretation, read_run
from neurocnn.report.sections import _agreement, _img, _maps, _p, _regions, _sanity, _table

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


def _fmt(value: Any, digits: int = 3) -> str:
    """A number to ``digits`` decimals; "–" for what was not computed (None: NaN saved as null)."""
    if value is None:
        return "–"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if number != number else f"{number:.{digits}f}"


def _ci(entry: dict[str, Any]) -> str:
    """Value [CI]: a single fold has no SD, a tiny cohort may have no CI (null in summary.json)."""
    ci = entry.get("ci95") or [None, None]
    lo, hi = [*ci, None, None][:2]
    return f"{_fmt(entry.get('value'))} [{_fmt(lo)}, {_fmt(hi)}]"


def _folds(summary: dict[str, Any]) -> str:
    done, expected = summary.get("folds_done", "?"), summary.get("folds_expected")
    return f"{done}/{expected}" if expected is not None else str(done)


def _fold_notes(run: Run) -> str:
    """Failed and missing folds, said aloud: the pooled numbers cover only the finished ones."""
    failed = list(run.summary.get("failed") or [])
    missing = [f for f in run.summary.get("missing") or [] if f not in failed]
    notes = []
    if failed:
        notes.append(f"{run.name}: failed folds (see folds/*/error.txt): {', '.join(failed)}.")
    if missing:
        notes.append(f"{run.name}: folds not finished: {', '.join(missing)}.")
    if notes:
        notes.append("Pooled metrics, ROC and confusion matrix cover the finished folds only.")
    return "".join(_p(n) for n in notes)


def _metrics_table(runs: Sequence[Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        pooled, ms = run.summary.get("pooled", {}), run.summary.get("mean_std", {})
        row: dict[str, Any] = {"run": run.name, "model": run.model, "folds": _folds(run.summary)}
        for m in HEADLINE:
            if m in pooled:
                row[f"{m} (95% CI)"] = _ci(pooled[m])
            if m in ms:
                row[f"{m} folds mean ± sd"] = f"{_fmt(ms[m].get('mean'))} ± {_fmt(ms[m].get('std'))}"
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


def _roc(loaded: Sequence[Run], classes: list[str]) -> str:
    """ROC of the main run's folds and pooled predictions, and of each comparable other run."""
    if len(classes) != 2:
        return _p("ROC curves are drawn for two classes.")
    main, notes, drawn = loaded[0], [], []
    if main.predictions.empty:
        return _p(NO_PREDICTIONS.format(name=main.name))
    for run in loaded:
        if run.classes != classes:
            notes.append(
                f"{run.name} not drawn: its classes {run.classes} differ from {main.name}'s {classes}."
            )
        elif run.predictions.empty:
            notes.append(f"{run.name} not drawn: it has no pooled test predictions.")
        else:
            drawn.append((run.name, run.predictions))
    return _img(figures.roc(drawn, classes), "ROC curves") + "".join(_p(n) for n in notes)


NO_PREDICTIONS = (
    "{name} has no pooled test predictions (e.g. the independent scheme, whose test cohort is "
    "evaluated with `neurocnn evaluate`): nothing to draw."
)


def build_report(
    runs: Sequence[Path | str],
    out: Path | str,
    *,
    interpretation: Path | str | None = None,
    title: str | None = None,
) -> Path:
    """Write the HTML report of ``runs`` (the first is the main run) to ``out``.

    The interpretation folder defaults to ``RUN/interpret`` of the first run when it exists; an
    ``interpretation`` given must exist.
    """
    if not runs:
        raise NeuroCNNError("give at least one run folder")
    out = Path(out)
    _check_out(out)
    loaded = [read_run(r) for r in runs]
    names = Counter(run.name for run in loaded)
    for run in loaded:  # same folder names under different parents: say which parent
        if names[run.name] > 1:
            run.name = f"{run.path.parent.name}/{run.path.name}"
    main = loaded[0]
    if interpretation is not None:
        interp = read_interpretation(interpretation, explicit=True)
    else:
        interp = read_interpretation(main.path / "interpret")
    classes = main.classes
    body: dict[str, str] = {}
    pooled = main.summary.get("pooled", {})
    headline = " · ".join(f"{m.replace('_', ' ')} {_ci(pooled[m])}" for m in HEADLINE[:2] if m in pooled)
    perm = (
        " (labels permuted: a leakage check, expected at chance)"
        if main.summary.get("permuted_labels")
        else ""
    )
    body["summary"] = (
        f"<p class='big'>{html.escape(main.name)}: {html.escape(headline or 'no pooled metrics')}</p>"
        + _p(
            f"{main.summary.get('n_subjects', '?')} subjects, "
            f"{_folds(main.summary)} folds finished{perm}; 95% CIs by bootstrap "
            "over participants of the pooled out-of-fold predictions."
        )
        + _fold_notes(main)
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
        + "".join(_fold_notes(r) for r in loaded)
        + "<h3>Per fold</h3>"
        + (_table(per_fold) if not per_fold.empty else _p("no per-fold metrics"))
    )
    body["roc"] = _roc(loaded, classes)
    body["learning"] = (
        _img(figures.learning_curves(main.histories), "learning curves")
        if main.histories
        else _p("No per-epoch history of a finished fold (a baseline run, or no fold finished).")
    )
    body["confusion"] = (
        _p(NO_PREDICTIONS.format(name=main.name))
        if main.predictions.empty
        else _img(figures.confusion(main.predictions, classes), "confusion matrix")
    )
    body["comparison"] = _comparison(loaded)
    missing = _p("No interpretation folder: run `neurocnn interpret RUN` first.")
    source = _p(f"Interpretation {interp.path}: {interp.source}.") if interp else ""
    body["maps"] = source + _maps(main, interp) if interp else missing
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
    out.parent.mkdir(parents=True, exist_ok=True)
    # a hidden name of this process beside the report: never a file of the user's
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _check_out(out: Path) -> None:
    """Refuse an --out that is a folder, or a file that is not an earlier report."""
    if out.is_dir():
        raise NeuroCNNError(
            f"--out {out} is a folder; give the report's file name, e.g. {out / 'report.html'}"
        )
    if out.exists() and GENERATOR not in out.read_text(errors="replace")[:2000]:
        raise NeuroCNNError(f"{out} exists and is not a neurocnn report; choose another --out")
