"""Checks `neurocnn interpret` makes before its long computation: the output folder it may replace,
and every option that could otherwise fail only after the maps were computed.

An interpretation folder is marked by ``.neurocnn-interpretation`` (written first into the
``.partial`` folder) and by ``"kind": "neurocnn-interpretation"`` in its ``summary.json``; only
such a folder is ever replaced (with ``overwrite``). A run folder, the run being explained, or a
folder holding what is read (run, checkpoint, cache) is never an output folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neurocnn import __version__
from neurocnn.errors import NeuroCNNError

if TYPE_CHECKING:
    from neurocnn.interpret.pipeline import InterpretOptions
    from neurocnn.interpret.regions import AtlasOnGrid
    from neurocnn.interpret.runs import FoldModel

MARKER = ".neurocnn-interpretation"
KIND = "neurocnn-interpretation"
# what a CNN run (`neurocnn.training.runfolder`, marker included) or a baseline run folder holds
RUN_FILES = (".neurocnn-run", "config.yaml", "splits.tsv", "data.json", "folds")


def is_interpretation(path: Path) -> bool:
    """Written by `neurocnn interpret` (its marker), and not a run folder."""
    return (path / MARKER).is_file() and not looks_like_run(path)


def looks_like_run(path: Path) -> bool:
    """A training or baseline run folder (or the start of one)."""
    return any((path / name).exists() for name in RUN_FILES)


def start_output(final: Path, overwrite: bool, protect: Sequence[Path | str] = ()) -> Path:
    """The empty ``<final>.partial`` folder (marked) to write into, after checking ``final``.

    ``protect``: what the interpretation reads (run folder, checkpoint, cache); ``final`` may
    neither be one of them nor contain one.
    """
    check_output(final, overwrite, protect)
    partial = final.with_name(final.name + ".partial")
    if partial.exists():
        # what an interrupted run left (marked, or still empty); anything else is not ours
        if (partial / MARKER).is_file() or _empty_dir(partial):
            shutil.rmtree(partial)
        else:
            raise NeuroCNNError(
                f"{partial} exists and was not left by `neurocnn interpret`; move it away or choose "
                "another --out (nothing was written)"
            )
    partial.mkdir(parents=True)
    (partial / MARKER).write_text(f"neurocnn {__version__} interpretation folder\n")
    return partial


def check_output(final: Path, overwrite: bool, protect: Sequence[Path | str] = ()) -> None:
    """Refuse an output folder whose replacement would lose anything but an earlier interpretation."""
    here = final.resolve()
    for item in protect:
        there = Path(item).resolve()
        if there == here or here in there.parents:
            raise NeuroCNNError(
                f"--out {final} is or contains {item}, which this interpretation reads; choose "
                "another --out (nothing was written)"
            )
    if final.exists() and looks_like_run(final):
        raise NeuroCNNError(
            f"{final} is a run folder; an interpretation never replaces it. Choose another --out, "
            f"e.g. {final / 'interpret'} (nothing was written)"
        )
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        if not is_interpretation(final):
            raise NeuroCNNError(
                f"{final} exists and is not an interpretation folder (no {MARKER}); choose another "
                "--out (nothing was written)"
            )
        if not overwrite:
            raise NeuroCNNError(
                f"{final} holds an earlier interpretation; --overwrite replaces it, or choose another --out"
            )


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


@dataclass
class Checked:
    """What the checks loaded and the analyses reuse: atlases on the grid (by spec), the planted
    regions of a synthetic cohort."""

    atlases: dict[str, AtlasOnGrid] = field(default_factory=dict)
    truth: dict[str, Any] | None = None


def check_options(models: list[FoldModel], cache: Any, options: InterpretOptions) -> Checked:
    """Load atlases and ground truth and check each requested analysis against the models and the
    cohort, so that a bad option fails before any map is computed."""
    from neurocnn.interpret import sanity
    from neurocnn.interpret.attribution import resolve_layer

    shape, affine = tuple(cache.shape[2:]), cache.affine
    checked = Checked()
    if options.ground_truth:
        masks, brain, effects = sanity.planted_regions(options.ground_truth, shape, affine)
        checked.truth = {"masks": masks, "brain": brain, "atlas": sanity.atlas_for(effects)}
    specs = list(options.atlases)
    if checked.truth is not None and checked.truth["atlas"] and checked.truth["atlas"] not in specs:
        specs.append(checked.truth["atlas"])
    names: dict[str, str] = {}
    for spec in specs:
        atlas = _atlas(spec, shape, affine)
        if atlas.name in names:
            raise NeuroCNNError(
                f"--atlas {spec} and {names[atlas.name]} are both named {atlas.name!r}: their region "
                "tables would overwrite each other; rename one of the images"
            )
        names[atlas.name] = spec
        checked.atlases[spec] = atlas
    if {"gradcam", "hirescam"} & set(options.methods):
        for fm in models:
            resolve_layer(fm.net, options.layer)
    if options.randomisation:
        sanity.check_randomisable(models[0].net)
    _check_two_classes(models, cache, options)
    return checked


def _check_two_classes(models: list[FoldModel], cache: Any, options: InterpretOptions) -> None:
    flags = (("--first-layer", options.first_layer), ("--voxel-stats", options.voxel_stats))
    wanted = [flag for flag, on in flags if on]
    if not wanted:
        return
    what = " and ".join(wanted)
    if len(cache.classes) != 2:
        raise NeuroCNNError(
            f"{what} compare two classes; this cohort has {len(cache.classes)} ({', '.join(cache.classes)})"
        )
    labels = cache.labels()
    if options.first_layer:
        from neurocnn.interpret.first_layer import default_first_layer

        for fm in models:
            default_first_layer(fm.net)
            if len(np.unique(labels[fm.test])) != 2:
                raise NeuroCNNError(f"--first-layer: {fm.name}'s test subjects are not of both classes")
    rows = np.concatenate([fm.test for fm in models])
    if options.voxel_stats and set(np.unique(labels[rows]).tolist()) != {0, 1}:
        raise NeuroCNNError("--voxel-stats: the explained subjects are not of both classes")


def _atlas(spec: str, shape: tuple[int, ...], affine: np.ndarray) -> AtlasOnGrid:
    from neurocnn.interpret.outputs import load_atlas

    try:
        return load_atlas(spec, shape, affine)
    except NeuroCNNError as exc:
        raise NeuroCNNError(f"--atlas {spec}: {exc}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise NeuroCNNError(f"--atlas {spec}: cannot be read ({type(exc).__name__}: {exc})") from None
