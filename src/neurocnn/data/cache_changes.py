"""What `neurocnn prepare` would change by replacing an existing cache.

A cache is only replaced silently when it describes the same cohort prepared with the same
parameters and only the contents of input files changed (an updated scan of the same table: the
arrays are brought up to date). A cache made with other parameters or from another cohort (subjects
added or left out, other labels, other image paths) is what runs were trained on: replacing it would
leave those runs pointing at arrays they never saw, so that needs ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from neurocnn.data.cache import FORMAT, INFO
from neurocnn.data.cohort import Cohort


def cohort_digest(cohort: Cohort) -> str:
    """sha256 of what makes a cohort (subjects in order, their labels, covariates and files, the
    modalities and classes); recorded in cache.json to tell another cohort from updated files."""
    spec = {
        "modalities": list(cohort.modalities),
        "classes": list(cohort.classes),
        "label_column": cohort.label_column,
        "subjects": [
            [s.key, s.label, sorted(s.covariates.items()), [str(p) for p in s.images.values()], str(s.mask)]
            for s in cohort.subjects
        ],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def replacement_changes(out: Path, cohort: Cohort, params: dict[str, Any]) -> list[str]:
    """How the cache at ``out`` differs in parameters or cohort from what would replace it (empty
    when there is none, it is of an older format, or only input files' contents changed)."""
    try:
        info = json.loads((out / INFO).read_text())
        manifest = pd.read_csv(
            out / "manifest.tsv", sep="\t", dtype={"participant_id": str, "session_id": str, "label": str}
        )
    except (OSError, ValueError):
        return []
    if info.get("format") != FORMAT:
        return []
    changes = _param_changes(info.get("params") or {}, json.loads(json.dumps(params)))
    for what in ("modalities", "classes", "label_column", "covariates"):
        new: Any = getattr(cohort, what)
        new = list(new) if isinstance(new, tuple) else new
        if what in info and info[what] != new:
            changes.append(f"{what.replace('_', ' ')} {info[what]!r} there, {new!r} now")
    changes += _subject_changes(info, manifest, cohort)
    if not changes and info.get("cohort_sha256") not in (None, cohort_digest(cohort)):
        changes.append("other covariate values in the table")
    return changes


def _param_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return [f"{k} {old.get(k)!r} there, {new.get(k)!r} now" for k in keys]


def _subject_changes(info: dict[str, Any], manifest: pd.DataFrame, cohort: Cohort) -> list[str]:
    sessions = manifest["session_id"] if "session_id" in manifest else [None] * len(manifest)
    old_keys = [
        f"{p}/{s}" if isinstance(s, str) and s else str(p)
        for p, s in zip(manifest["participant_id"], sessions, strict=True)
    ]
    new_keys = [s.key for s in cohort.subjects]
    if old_keys != new_keys:
        gone = [k for k in old_keys if k not in set(new_keys)]
        added = [k for k in new_keys if k not in set(old_keys)]
        parts = [f"{len(old_keys)} subjects there, {len(new_keys)} now"]
        if gone:
            parts.append(f"{len(gone)} left out (e.g. {gone[0]})")
        if added:
            parts.append(f"{len(added)} added (e.g. {added[0]})")
        if not gone and not added:
            parts.append("in another order")
        return [", ".join(parts)]
    changes = []
    old_labels = [None if pd.isna(v) else str(v) for v in manifest.get("label", [None] * len(old_keys))]
    relabelled = [
        f"{s.key}: {a!r} there, {s.label!r} now"
        for s, a in zip(cohort.subjects, old_labels, strict=True)
        if a != s.label
    ]
    if relabelled:
        changes.append(f"labels of {len(relabelled)} subject(s) ({relabelled[0]})")
    old_files = info.get("subject_files") or []
    new_files = [
        {m: str(p) for m, p in [*s.images.items(), *([("mask", s.mask)] if s.mask else [])]}
        for s in cohort.subjects
    ]
    moved = [s.key for s, a, b in zip(cohort.subjects, old_files, new_files, strict=False) if a != b]
    if old_files and moved:
        changes.append(f"image or mask paths of {len(moved)} subject(s) (e.g. {moved[0]})")
    return changes
