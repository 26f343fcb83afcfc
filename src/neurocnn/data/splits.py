"""Subject-level splits: stratified k-fold (repeated, nested), train/validation/test fractions,
independent test cohorts and stratified random subsets of the training data.

A split table has one row per (split, subject) with columns ``repeat, fold, inner, index,
participant_id, session_id, label_index, role`` where role is ``train``, ``val`` or ``test``; ``inner``
is -1 for outer splits and the inner fold number for nested ones. Participants, not sessions, are
assigned to folds, so sessions of one participant never cross folds. Tables are saved in the run
folder and read back from there, never silently regenerated.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from neurocnn.errors import NeuroCNNError

COLUMNS = ["repeat", "fold", "inner", "index", "participant_id", "session_id", "label_index", "role"]
ROLES = ("train", "val", "test")


def _participants(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per participant with its label; refuses participants whose sessions disagree and a
    cohort without any label. Subjects without a label (an empty cell in the label column) cannot be
    trained or scored on: they are left out with a warning that names them."""
    unlabelled = manifest[manifest["label_index"] < 0]
    if len(unlabelled):
        sessions = unlabelled["session_id"] if "session_id" in unlabelled else [None] * len(unlabelled)
        keys = [
            f"{p}/{s}" if isinstance(s, str) and s else str(p)
            for p, s in zip(unlabelled["participant_id"], sessions, strict=True)
        ]
        if len(keys) == len(manifest):
            raise NeuroCNNError(
                "no subject of the cohort has a label; prepare it with --label COLUMN to train on it"
            )
        more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
        warnings.warn(
            f"{len(keys)} of {len(manifest)} subject(s) have no label and are left out of the splits "
            f"({', '.join(keys[:10])}{more})",
            UserWarning,
            stacklevel=3,
        )
        manifest = manifest[manifest["label_index"] >= 0]
    check_two_classes(manifest, "the cohort")
    per = manifest.groupby("participant_id")["label_index"].agg(["min", "max"])
    mixed = per.index[per["min"] != per["max"]].tolist()
    if mixed:
        raise NeuroCNNError(
            "participants with different labels in different sessions cannot be "
            f"split by participant: {', '.join(mixed[:10])}; fix their labels"
        )
    return per["min"].rename("label_index").reset_index()


def check_two_classes(manifest: pd.DataFrame, where: object) -> None:
    """Refuse a cohort whose labelled subjects are all of one class: a classifier trained on it
    learns nothing, and its metrics (balanced accuracy 1, AUC undefined) would look like results."""
    labelled = manifest[manifest["label_index"] >= 0]
    if labelled.empty:
        return  # (no label at all: said by the callers)
    column = "label" if "label" in labelled else "label_index"
    found = sorted(labelled[column].astype(str).unique())
    if len(found) < 2:
        raise NeuroCNNError(
            f"{where}: a classifier needs at least two classes, found {found}; prepare a cohort whose "
            "label column has two or more values (`neurocnn cohort TABLE --label COLUMN` shows them)"
        )


def _expand(
    manifest: pd.DataFrame, roles: dict[str, str], repeat: int, fold: int, inner: int = -1
) -> pd.DataFrame:
    rows = manifest[manifest["participant_id"].isin(roles) & (manifest["label_index"] >= 0)]
    out = pd.DataFrame(
        {
            "repeat": repeat,
            "fold": fold,
            "inner": inner,
            "index": rows["index"].to_numpy(),
            "participant_id": rows["participant_id"].to_numpy(),
            "session_id": rows["session_id"].to_numpy() if "session_id" in rows else None,
            "label_index": rows["label_index"].to_numpy(),
            "role": rows["participant_id"].map(roles).to_numpy(),
        }
    )
    return out


def _carve(
    train_ids: np.ndarray, train_y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A stratified validation set carved from training participants (the test fold is never used)."""
    if val_fraction <= 0:
        return train_ids, train_ids[:0]
    n_val = max(len(np.unique(train_y)), round(val_fraction * len(train_ids)))
    tr, va = train_test_split(train_ids, test_size=n_val, stratify=train_y, random_state=seed)
    return np.asarray(tr), np.asarray(va)


def kfold(
    manifest: pd.DataFrame,
    k: int = 10,
    *,
    repeats: int = 1,
    val_fraction: float = 0.1,
    seed: int = 0,
    nested: int = 0,
) -> pd.DataFrame:
    """Stratified k-fold over participants, repeated with seeds ``seed, seed+1, ...``.

    Parameters
    ----------
    manifest
        A cache manifest (``index, participant_id, label_index``; unlabelled rows are left out
        with a warning).
    k
        Number of outer folds; each participant is in exactly one test fold per repeat.
    val_fraction
        Share of all participants carved (stratified) from each training fold for validation.
    nested
        When > 0, also inner ``nested``-fold splits of every outer training set (``inner`` >= 0),
        for hyper-parameter search that never sees the outer test fold.
    """
    people = _participants(manifest)
    ids, y = people["participant_id"].to_numpy(), people["label_index"].to_numpy()
    _check_folds(y, k)
    tables = []
    for r in range(repeats):
        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed + r)
        for f, (tr_i, te_i) in enumerate(skf.split(ids, y)):
            frac = val_fraction * len(ids) / max(1, len(tr_i))
            tr, va = _carve(ids[tr_i], y[tr_i], frac, seed + 1000 * r + f)
            roles = {
                **dict.fromkeys(tr, "train"),
                **dict.fromkeys(va, "val"),
                **dict.fromkeys(ids[te_i], "test"),
            }
            tables.append(_expand(manifest, roles, r, f))
            if nested:
                inner_manifest = manifest[manifest["participant_id"].isin(ids[tr_i])]
                inner = kfold(
                    inner_manifest, nested, val_fraction=val_fraction, seed=seed + 7919 * (r + 1) + f
                )
                inner["repeat"], inner["inner"], inner["fold"] = r, inner["fold"], f
                tables.append(inner)
    return _finish(pd.concat(tables, ignore_index=True))


def holdout(
    manifest: pd.DataFrame,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    *,
    repeats: int = 1,
    seed: int = 0,
) -> pd.DataFrame:
    """Stratified train/validation/test split by fractions (S4's 80/10/10), repeated."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise NeuroCNNError(
            f"fractions {fractions}: need train, validation and test, non-negative, summing to 1"
        )
    if fractions[0] <= 0 or fractions[2] <= 0:
        raise NeuroCNNError(f"fractions {fractions}: the train and test fractions must be above 0")
    people = _participants(manifest)
    ids, y = people["participant_id"].to_numpy(), people["label_index"].to_numpy()
    tables = []
    for r in range(repeats):
        rest, test = train_test_split(ids, test_size=fractions[2], stratify=y, random_state=seed + r)
        rest_y = people.set_index("participant_id").loc[rest, "label_index"].to_numpy()
        tr, va = _carve(np.asarray(rest), rest_y, fractions[1] / (1 - fractions[2]), seed + r)
        roles = {**dict.fromkeys(tr, "train"), **dict.fromkeys(va, "val"), **dict.fromkeys(test, "test")}
        tables.append(_expand(manifest, roles, r, 0))
    return _finish(pd.concat(tables, ignore_index=True))


def independent(manifest: pd.DataFrame, *, val_fraction: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """All labelled subjects of the training cohort for training (with a carved validation set);
    the test set is a separate cohort, evaluated with `neurocnn evaluate`."""
    people = _participants(manifest)
    ids, y = people["participant_id"].to_numpy(), people["label_index"].to_numpy()
    tr, va = _carve(ids, y, val_fraction, seed)
    return _finish(_expand(manifest, {**dict.fromkeys(tr, "train"), **dict.fromkeys(va, "val")}, 0, 0))


def subsample(splits: pd.DataFrame, fraction: float, *, seed: int = 0) -> pd.DataFrame:
    """Keep a stratified random ``fraction`` of each outer split's training participants (S2's 20%).

    Validation and test subjects are untouched, so results stay comparable with the full set.
    Nested inner splits keep only the subjects of their outer training fold that remain (kept
    training and validation participants), so a search chooses on the data its outer model trains
    on; their training sets are not thinned again.
    """
    if not 0 < fraction <= 1:
        raise NeuroCNNError(f"subset fraction {fraction} must be in (0, 1]")
    kept, remaining = [], {}
    outer = splits[splits["inner"] == -1]
    for (r, f), group in outer.groupby(["repeat", "fold"], sort=False):
        train = group[group["role"] == "train"]
        people = train.drop_duplicates("participant_id")
        n = max(people["label_index"].nunique(), round(fraction * len(people)))
        if n < len(people):
            chosen, _ = train_test_split(
                people["participant_id"].to_numpy(),
                train_size=n,
                stratify=people["label_index"].to_numpy(),
                random_state=seed + 9973 * r + 97 * f,
            )
        else:
            chosen = people["participant_id"].to_numpy()
        group = group[(group["role"] != "train") | group["participant_id"].isin(chosen)]
        kept.append(group)
        remaining[(r, f)] = set(group.loc[group["role"] != "test", "participant_id"])
    for (r, f, i), group in splits[splits["inner"] >= 0].groupby(["repeat", "fold", "inner"], sort=False):
        group = group[group["participant_id"].isin(remaining.get((r, f), set()))]
        short = [role for role in ("train", "test") if not (group["role"] == role).any()]
        if short:
            raise NeuroCNNError(
                f"subset {fraction:g} leaves inner split {i} of repeat {r} fold {f} without "
                f"{' and '.join(short)} subjects; use a larger --subset or fewer --nested folds"
            )
        kept.append(group)
    return _finish(pd.concat(kept, ignore_index=True))


def check_nested(splits: pd.DataFrame) -> None:
    """Refuse inner splits that use subjects outside their outer training fold (train and
    validation): a search on them would choose with the outer test fold, or with subjects its outer
    model never trains on."""
    outer = splits[splits["inner"] == -1]
    fit = {
        key: set(g.loc[g["role"] != "test", "index"])
        for key, g in outer.groupby(["repeat", "fold"], sort=True)
    }
    for (r, f, i), group in splits[splits["inner"] >= 0].groupby(["repeat", "fold", "inner"], sort=True):
        outside = sorted(set(group["index"]) - fit.get((r, f), set()))
        if outside:
            raise NeuroCNNError(
                f"split r{r}_f{f}: inner split {i} uses {len(outside)} subject(s) outside the outer "
                f"training fold (indices {outside[:5]}); the split table is inconsistent, make it again"
            )


def check_no_leakage(splits: pd.DataFrame) -> None:
    """Refuse a split in which one participant has two roles (e.g. in training and in test)."""
    problems = []
    for (r, f, i), group in splits.groupby(["repeat", "fold", "inner"]):
        roles = group.groupby("participant_id")["role"].nunique()
        for pid in roles.index[roles > 1]:
            found = sorted(group.loc[group["participant_id"] == pid, "role"].unique())
            problems.append(f"repeat {r} fold {f} inner {i}: participant {pid} is in {' and '.join(found)}")
    if problems:
        raise NeuroCNNError(
            "leakage: participants appear in more than one role of a split; "
            "regenerate the splits by participant:",
            problems=problems[:20],
        )


def save_splits(splits: pd.DataFrame, path: Path | str) -> Path:
    """Write a split table; refuses to replace a different existing one."""
    path = Path(path)
    check_no_leakage(splits)
    if path.exists():
        existing = load_splits(path)
        if not existing.reset_index(drop=True).equals(_finish(splits).reset_index(drop=True)):
            raise NeuroCNNError(
                f"{path} already holds different splits; results made with them "
                "would no longer match. Use another run folder or delete the file"
            )
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    _finish(splits).to_csv(tmp, sep="\t", index=False)
    tmp.replace(path)
    return path


def load_splits(path: Path | str) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise NeuroCNNError(f"no split table at {path}; create it with `neurocnn splits`")
    table = pd.read_csv(path, sep="\t", dtype={"participant_id": str, "session_id": str})
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise NeuroCNNError(f"{path}: not a split table (missing {missing})")
    check_no_leakage(table)
    return _finish(table)


def split_indices(
    splits: pd.DataFrame,
    repeat: int,
    fold: int,
    inner: int = -1,
) -> dict[str, np.ndarray]:
    """Cache indices of each role in one split."""
    g = splits[(splits["repeat"] == repeat) & (splits["fold"] == fold) & (splits["inner"] == inner)]
    if g.empty:
        raise NeuroCNNError(f"no split repeat={repeat} fold={fold} inner={inner} in the table")
    return {role: g.loc[g["role"] == role, "index"].to_numpy(dtype=np.int64) for role in ROLES}


def _check_folds(y: np.ndarray, k: int) -> None:
    if k < 2:
        raise NeuroCNNError(f"k = {k}: need at least 2 folds")
    values, counts = np.unique(y, return_counts=True)
    small = [f"class {v}: {c}" for v, c in zip(values, counts, strict=True) if c < k]
    if small:
        raise NeuroCNNError(
            f"fewer participants than the {k} folds in {', '.join(small)}; use "
            "fewer folds or add participants"
        )


def _finish(table: pd.DataFrame) -> pd.DataFrame:
    table = table[COLUMNS].copy()
    for c in ("repeat", "fold", "inner", "index", "label_index"):
        table[c] = table[c].astype(np.int64)
    sessions = table["session_id"].astype(object)
    table["session_id"] = sessions.where(sessions.notna(), None)
    return table.sort_values(
        ["repeat", "inner", "fold", "role", "index"],
        kind="stable",
    ).reset_index(drop=True)
