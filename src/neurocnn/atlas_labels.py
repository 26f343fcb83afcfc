"""Label tables of atlases: reading a user's table (CSV, TSV or JSON) and finding regions in one.

A label table maps label values of a label map to region names, ``{value: name}``; value 0 is
background (see `neurocnn.atlases`).
"""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from neurocnn.errors import NeuroCNNError


def read_label_table(path: str | Path) -> dict[int, str]:
    """Read a label table: CSV/TSV (index,name) or JSON, as ``{label value: name}``.

    Parameters
    ----------
    path
        The table file.

    Returns
    -------
    dict
        Label value → region name (value 0 included if the file lists it).
    """
    path = Path(path)
    if not path.is_file():
        raise NeuroCNNError(f"label table {path}: file not found")
    if path.suffix.lower() == ".json":
        return _read_json_table(path)
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a BOM (Excel) is dropped
        text = handle.read()
    if not text.strip():
        raise NeuroCNNError(f"label table {path}: empty; expected index,name rows")
    delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in text.splitlines()[0] else ","
    rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    if not rows:
        raise NeuroCNNError(f"label table {path}: empty; expected index,name rows")
    columns = {c.strip().lower(): c for c in rows[0] if c is not None}
    index_col = next((columns[c] for c in ("index", "label", "value", "id") if c in columns), None)
    name_col = next((columns[c] for c in ("name", "label_name", "region", "roi") if c in columns), None)
    if index_col is None or name_col is None or index_col == name_col:
        raise NeuroCNNError(
            f"label table {path}: expected columns 'index' and 'name', found "
            f"{', '.join(columns)}; rename them"
        )
    table: dict[int, str] = {}
    for line, row in enumerate(rows, start=2):
        try:
            table[int(float(row[index_col]))] = str(row[name_col]).strip()
        except (TypeError, ValueError) as exc:
            raise NeuroCNNError(
                f"label table {path}, line {line}: index {row[index_col]!r} is not an integer"
            ) from exc
    return table


def find_labels(
    labels: Mapping[int, str], regions: Iterable[str | int], *, atlas: str = "atlas"
) -> list[int]:
    """Turn region names or label values into label values, with a helpful error.

    Parameters
    ----------
    labels
        ``{label value: name}`` of the atlas.
    regions
        Names (case-insensitive) or integer label values.
    atlas
        The atlas name, for error messages.

    Returns
    -------
    list of int
        Label values in the order given.
    """
    by_name = {name.lower(): value for value, name in labels.items()}
    values: list[int] = []
    for region in regions:
        if isinstance(region, int | np.integer) or (isinstance(region, str) and region.isdigit()):
            value = int(region)
            if value not in labels:
                raise NeuroCNNError(
                    f"atlas {atlas}: no region with label value {value}; values range "
                    f"{min(labels)}..{max(labels)}"
                )
            values.append(value)
            continue
        key = str(region).lower()
        if key not in by_name:
            close = difflib.get_close_matches(str(region), list(labels.values()), n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise NeuroCNNError(
                f"atlas {atlas}: no region named {region!r}{hint} "
                f"(list the names with neurocnn.atlases.load_atlas({atlas!r})[1])"
            )
        values.append(by_name[key])
    return values


def _read_json_table(path: Path) -> dict[int, str]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise NeuroCNNError(f"label table {path}: not valid JSON ({exc})") from exc
    if isinstance(content, dict) and "rois" in content:
        content = content["rois"]
    table: dict[int, str] = {}
    try:
        if isinstance(content, dict):
            for key, value in content.items():
                name = value.get("label", value.get("name")) if isinstance(value, dict) else value
                table[int(key)] = str(name)
        elif isinstance(content, list):
            for row in content:
                table[int(row.get("index", row.get("label")))] = str(row["name"])
        else:
            raise TypeError(type(content).__name__)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise NeuroCNNError(
            f"label table {path}: expected {{'rois': {{'1': {{'label': name}}}}}}, "
            f"{{'1': name}} or [{{'index': 1, 'name': ...}}] ({exc})"
        ) from exc
    return table
