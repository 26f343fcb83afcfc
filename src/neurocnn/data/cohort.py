"""Cohort manifest: who the participants are, where their images are, what their labels are.

A cohort comes from a participants table (CSV/TSV, BIDS conventions: `participant_id`, optional
`session_id`) with one image column per modality, or from a BIDS-like folder searched by glob pattern
and joined with its `participants.tsv`. `validate_cohort` reads every image once and reports every
problem of every subject in one message.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from neurocnn.data.cohort_checks import shared_image_files
from neurocnn.data.io import ImageCheck, check_image
from neurocnn.errors import NeuroCNNError

ID = "participant_id"
SESSION = "session_id"
MISSING = ["", "n/a", "NA", "NaN", "nan"]


@dataclass(frozen=True)
class Subject:
    """One participant (at one session) with its images, optional mask, label and covariates."""

    participant_id: str
    session_id: str | None
    images: dict[str, Path]
    mask: Path | None = None
    label: str | None = None
    covariates: dict[str, object] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """`participant_id` or `participant_id/session_id`: unique within a cohort."""
        return (
            self.participant_id if self.session_id is None else (f"{self.participant_id}/{self.session_id}")
        )


@dataclass(frozen=True)
class Cohort:
    """The subjects of a study and the meaning of their labels.

    `classes` gives the class order: class index i is `classes[i]`. It is sorted (numerically when
    every label is a number) unless the user gave an order, and it is recorded with every result.
    """

    subjects: tuple[Subject, ...]
    modalities: tuple[str, ...]
    label_column: str | None
    classes: tuple[str, ...]
    covariates: tuple[str, ...]
    source: Path
    mask_column: str | None = None  # (the mask pattern for a BIDS folder)

    def __len__(self) -> int:
        return len(self.subjects)

    def label_index(self, subject: Subject) -> int:
        """Class index of a subject, or -1 when it has no label."""
        return -1 if subject.label is None else self.classes.index(subject.label)

    def labels(self) -> np.ndarray:
        return np.array([self.label_index(s) for s in self.subjects], dtype=np.int64)

    def to_frame(self) -> pd.DataFrame:
        """One row per subject: ids, label, label index, covariates and image paths."""
        rows = []
        for s in self.subjects:
            row: dict[str, object] = {
                ID: s.participant_id,
                SESSION: s.session_id,
                "label": s.label,
                "label_index": self.label_index(s),
            }
            row.update(s.covariates)
            row.update({m: str(p) for m, p in s.images.items()})
            if s.mask is not None:
                row["mask"] = str(s.mask)
            rows.append(row)
        return pd.DataFrame(rows)


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or TSV participants table, every column as text (ids like 007 stay as written)."""
    path = Path(path)
    if not path.exists():
        raise NeuroCNNError(
            f"participants table {path} not found; give the path of a CSV or TSV "
            "file with a participant_id column"
        )
    sep = "\t" if path.suffix.lower() in {".tsv", ".txt"} else ","
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=MISSING)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise NeuroCNNError(
            f"participants table {path} cannot be parsed ({exc}); save it as UTF-8 CSV or TSV"
        ) from exc
    table.columns = [c.strip() for c in table.columns]
    # a cell of blanks (or ' n/a ') is missing too, not a label or covariate value ''
    return table.apply(lambda col: col.where(~col.str.strip().isin(MISSING)))


def read_cohort(
    table_path: Path | str,
    *,
    images: Sequence[str],
    label: str | None = None,
    covariates: Sequence[str] = (),
    mask: str | None = None,
    classes: Sequence[str] | None = None,
    require_labels: bool = True,
    table: pd.DataFrame | None = None,
) -> Cohort:
    """Build a cohort from a participants table.

    Parameters
    ----------
    table_path
        CSV or TSV; image paths in it are relative to its folder unless absolute.
    images
        Image columns, one per modality (e.g. ``["gm", "wm"]``); their order is the channel order.
    label
        The label column; ``None`` for unlabelled use such as prediction.
    covariates
        Extra columns kept with each subject (age, sex, site, ...).
    mask
        Optional brain-mask column (binary mask or label map; ``> 0`` is brain).
    classes
        Class order; by default the sorted label values.
    require_labels
        When false, subjects without a label are kept (with label ``None``).

    Raises
    ------
    NeuroCNNError
        For unknown columns, duplicate rows and missing labels, all listed in one message.
    """
    table_path = Path(table_path)
    df = read_table(table_path) if table is None else table
    root = table_path.parent.resolve()
    images = list(images)
    if not images:
        raise NeuroCNNError("no image column given; name at least one (e.g. --images t1)")
    wanted = [ID, *images, *covariates] + ([label] if label else []) + ([mask] if mask else [])
    unknown = [c for c in dict.fromkeys(wanted) if c not in df.columns]
    if unknown:
        raise NeuroCNNError(
            f"{table_path}: unknown column(s) {', '.join(map(repr, unknown))}; the table has "
            f"{', '.join(map(repr, df.columns))}"
        )

    problems: list[str] = []
    has_session = SESSION in df.columns
    ids = df[ID].fillna("").str.strip()
    sessions = df[SESSION].fillna("").str.strip() if has_session else pd.Series([""] * len(df))
    keys = [f"{p}/{s}" if s else p for p, s in zip(ids, sessions, strict=True)]
    for key, n in Counter(keys).items():
        if n > 1:
            problems.append(
                f"{key}: appears in {n} rows of {table_path.name}; keep one row per participant and session"
            )
    for row_number, pid in enumerate(ids, start=2):
        if not pid:
            problems.append(
                f"row {row_number} of {table_path.name}: empty participant_id; fill it in or delete the row"
            )

    subjects: list[Subject] = []
    for i, row in df.iterrows():
        pid, ses = ids[i], sessions[i] or None
        if not pid:
            continue
        value = row[label] if label else None
        if isinstance(value, str) and value.strip() in MISSING:
            value = None  # (a table given as a DataFrame, not read by read_table)
        if label and (value is None or (isinstance(value, float) and math.isnan(value))):
            value = None
            if require_labels:
                problems.append(
                    f"{pid}: no value in label column {label!r}; fill it in or remove "
                    "the subject (unlabelled subjects are only for predict)"
                )
        paths = {}
        for m in images:
            cell = row[m]
            if not isinstance(cell, str) or not cell.strip():
                problems.append(f"{pid}: no path in image column {m!r}; fill it in or remove the subject")
                continue
            paths[m] = _resolve(root, cell)
        mask_path = None
        if mask:
            cell = row[mask]
            if isinstance(cell, str) and cell.strip():
                mask_path = _resolve(root, cell)
            else:
                problems.append(f"{pid}: no path in mask column {mask!r}; fill it in or drop --mask")
        covs = {c: _covariate(row[c]) for c in covariates}
        subjects.append(
            Subject(pid, ses, paths, mask_path, None if value is None else str(value).strip(), covs)
        )
    problems += shared_image_files(subjects)
    if problems:
        raise NeuroCNNError(f"{table_path}: {len(problems)} problem(s) in the table:", problems=problems)

    found = sorted({s.label for s in subjects if s.label is not None}, key=_natural)
    if classes is not None:
        classes = [str(c) for c in classes]
        extra = [c for c in found if c not in classes]
        if extra:
            raise NeuroCNNError(
                f"{table_path}: label value(s) {extra} are not among the given "
                f"classes {classes}; add them to --classes or fix the table"
            )
        found = classes
    return Cohort(
        tuple(subjects), tuple(images), label, tuple(found), tuple(covariates), table_path, mask_column=mask
    )


def cohort_from_bids(
    root: Path | str,
    pattern: str,
    *,
    modality: str = "t1",
    participants: str = "participants.tsv",
    label: str | None = None,
    covariates: Sequence[str] = (),
    mask_pattern: str | None = None,
    classes: Sequence[str] | None = None,
    require_labels: bool = True,
) -> Cohort:
    """Build a cohort from a BIDS-like folder: images found by glob, joined with participants.tsv.

    ``pattern`` is relative to ``root``, e.g. ``"sub-*/anat/sub-*_T1w.nii.gz"``; the participant and
    session come from the ``sub-<id>`` and ``ses-<id>`` parts of each path. ``mask_pattern`` may name
    a matching mask with ``{sub}`` (and ``{ses}``) placeholders, e.g.
    ``"derivatives/masks/sub-{sub}_mask.nii.gz"``.
    """
    root = Path(root)
    files = sorted(root.glob(pattern))
    if not files:
        raise NeuroCNNError(
            f"no file under {root} matches {pattern!r}; check the folder and the "
            "pattern (e.g. 'sub-*/anat/sub-*_T1w.nii.gz')"
        )
    table = read_table(root / participants)
    if ID not in table.columns:
        raise NeuroCNNError(f"{root / participants}: no participant_id column")
    table[ID] = table[ID].astype(str).str.strip()
    repeated = sorted(set(table.loc[table[ID].duplicated(), ID]))
    if repeated:
        raise NeuroCNNError(
            f"{root / participants}: participant(s) {', '.join(repeated[:10])} have more than one row; "
            "keep one row per participant (sessions come from the ses-<label> part of the paths)"
        )
    by_id = table.set_index(ID, drop=False)
    rows, problems = [], []
    for f in files:
        rel = f.relative_to(root).as_posix()
        sub = re.search(r"sub-([A-Za-z0-9]+)", rel)
        if sub is None:
            problems.append(f"{rel}: no sub-<label> in the path; rename it the BIDS way")
            continue
        pid = f"sub-{sub.group(1)}"
        ses = re.search(r"ses-([A-Za-z0-9]+)", rel)
        if pid not in by_id.index:
            problems.append(f"{pid} ({rel}): not in {participants}; add a row for it")
            continue
        row = by_id.loc[pid].to_dict()
        row[SESSION] = f"ses-{ses.group(1)}" if ses else ""
        row[modality] = rel
        if mask_pattern:
            try:
                row["mask"] = mask_pattern.format(sub=sub.group(1), ses=ses.group(1) if ses else "")
            except (KeyError, IndexError, ValueError) as exc:
                raise NeuroCNNError(
                    f"mask pattern {mask_pattern!r}: only {{sub}} and {{ses}} may appear in braces"
                ) from exc
        rows.append(row)
    if problems:
        raise NeuroCNNError(
            f"{root}: {len(problems)} problem(s) joining images with {participants}:", problems=problems
        )
    df = pd.DataFrame(rows)
    if not df[SESSION].astype(bool).any():
        df = df.drop(columns=[SESSION])
    cohort = read_cohort(
        root / participants,
        images=[modality],
        label=label,
        covariates=covariates,
        mask="mask" if mask_pattern else None,
        classes=classes,
        require_labels=require_labels,
        table=df.reset_index(drop=True),
    )
    return dataclasses.replace(cohort, mask_column=mask_pattern)


def validate_cohort(
    cohort: Cohort, *, n_folds: int | None = None, require_labels: bool = True, workers: int = 4
) -> None:
    """Read every image of every subject and raise one error listing every problem.

    Checks per file: missing, unreadable/corrupt/truncated, not 3D, NaN/Inf voxels, all zero; per
    subject: modalities (and mask) on different grids; per cohort: missing labels when labels are
    required, fewer subjects in a class than folds (counted by participant).
    """
    jobs = [
        (s, m, p, m == "mask")
        for s in cohort.subjects
        for m, p in [*s.images.items(), *([("mask", s.mask)] if s.mask else [])]
    ]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        checks = list(pool.map(lambda j: check_image(j[2], is_mask=j[3]), jobs))
    problems: list[str] = []
    per_subject: dict[str, list[tuple[str, ImageCheck]]] = {}
    for (s, m, _, _), check in zip(jobs, checks, strict=True):
        if check.problem:
            problems.append(f"{s.key} [{m}] {check.path}: {check.problem}")
        else:
            per_subject.setdefault(s.key, []).append((m, check))
    for key, items in per_subject.items():
        (m0, ref), rest = items[0], items[1:]
        for m, check in rest:
            if check.shape != ref.shape:
                problems.append(
                    f"{key} [{m}] {check.path}: shape {check.shape} differs from "
                    f"{m0}'s {ref.shape}; all images of a subject must share one grid "
                    "(resample them together first)"
                )
            elif not np.allclose(check.affine, ref.affine, atol=1e-3):  # type: ignore[arg-type]
                problems.append(
                    f"{key} [{m}] {check.path}: affine differs from {m0}'s; all "
                    "images of a subject must share one grid (resample or fix headers)"
                )
    if cohort.label_column:
        if require_labels:
            problems += [
                f"{s.key}: no label in column {cohort.label_column!r}; fill it in or remove the subject"
                for s in cohort.subjects
                if s.label is None
            ]
        if n_folds:
            counts = Counter(
                s.label
                for s in {s.participant_id: s for s in cohort.subjects}.values()
                if s.label is not None
            )
            problems += [
                f"class {c!r}: {n} participant(s), fewer than the {n_folds} folds; use "
                f"fewer folds or add subjects"
                for c, n in counts.items()
                if n < n_folds
            ]
    if problems:
        raise NeuroCNNError(
            f"{cohort.source}: {len(problems)} problem(s) found; nothing was written:", problems=problems
        )


def _resolve(root: Path, cell: str) -> Path:
    p = Path(cell.strip())
    return p if p.is_absolute() else root / p


def _covariate(value: object) -> object:
    if not isinstance(value, str):
        return None
    try:
        return float(value)
    except ValueError:
        return value.strip()


def _natural(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)
