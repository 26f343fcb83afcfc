"""`neurocnn prepare`: a validated cohort -> a cache folder, in parallel, resumable.

Finished subjects are kept under ``<out>.partial/subjects`` keyed by a hash of their input files and
the parameters, so an interrupted run redoes only what it had not finished. The cache is reused
instantly when neither inputs nor parameters changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from neurocnn import __version__
from neurocnn.data.cache import (
    PreparedCohort,
    check_output_folder,
    hash_inputs,
    is_current,
    open_cache,
    write_cache,
)
from neurocnn.data.cache_changes import cohort_digest, replacement_changes
from neurocnn.data.cohort import Cohort, Subject, validate_cohort
from neurocnn.data.cohort_checks import mixed_voxel_sizes, shared_image_contents
from neurocnn.data.preprocess import PrepareParams, prepare_subject
from neurocnn.errors import NeuroCNNError


@dataclass(frozen=True)
class PrepareResult:
    cache: PreparedCohort
    reused: bool
    prepared: int
    resumed: int
    seconds: float
    changed_files: tuple[str, ...] = ()  # inputs whose contents changed since the cache was made


def prepare_cohort(
    cohort: Cohort,
    out: Path | str,
    params: PrepareParams,
    *,
    jobs: int | None = None,
    progress: bool = True,
    validate: bool = True,
    overwrite: bool = False,
) -> PrepareResult:
    """Prepare every subject of ``cohort`` into the cache folder ``out``.

    Parameters
    ----------
    cohort
        The cohort (labels may be missing: preparation does not need them).
    out
        Cache folder. An existing cache of the same cohort and parameters whose input files changed
        is brought up to date; one made with other parameters or from another cohort is replaced only
        with ``overwrite`` (runs trained on it would no longer match it).
    params
        Preparation parameters (recorded and hashed).
    jobs
        Worker processes (default: number of CPUs).
    overwrite
        Replace a cache prepared with other parameters or from another cohort.

    Returns
    -------
    PrepareResult
        The opened cache and what was done.
    """
    start = time.perf_counter()
    out = Path(out)
    if not cohort.subjects:
        raise NeuroCNNError(
            f"{cohort.source}: the cohort has no subjects (no rows below the header); nothing to prepare"
        )
    check_output_folder(out)
    inputs = _input_files(cohort)
    template = _template_digest(params)
    spec_hash = _spec_hash(cohort, params, template)
    if is_current(out, spec_hash, inputs):
        return PrepareResult(open_cache(out), True, 0, 0, time.perf_counter() - start)
    if not overwrite:
        changes = replacement_changes(out, cohort, params.model_dump(mode="json"))
        if changes:
            raise NeuroCNNError(
                f"{out} holds a cache prepared with other parameters or from another cohort "
                f"({'; '.join(changes[:4])}); runs trained on it would no longer match it. Give "
                "another --out, or --overwrite to replace it (nothing was written)"
            )
    if validate:
        validate_cohort(cohort, require_labels=False)
    _check_voxel_sizes(cohort, params)
    previous = _previous_hashes(out)
    hashes = hash_inputs(inputs, previous)
    changed = tuple(p for p, h in hashes.items() if p in previous and previous[p]["sha256"] != h["sha256"])
    copies = shared_image_contents(cohort.subjects, hashes)
    if copies:
        raise NeuroCNNError(
            f"{cohort.source}: {len(copies)} scan(s) appear under more than one participant; "
            "nothing was written:",
            problems=copies,
        )

    partial = out.with_name(out.name + ".partial")
    subjects_dir = partial / "subjects"
    subjects_dir.mkdir(parents=True, exist_ok=True)
    params_key = hashlib.sha256(f"{params.digest()}{template}|{__version__}".encode()).hexdigest()
    keys = [_subject_key(s, params_key, hashes) for s in cohort.subjects]
    # a subject is done when its array and its affine are both there (an interrupted or failed
    # assembly below keeps both, so a rerun resumes instead of missing affines)
    todo = [
        i
        for i, k in enumerate(keys)
        if not ((subjects_dir / f"{k}.npy").exists() and (subjects_dir / f"{k}.affine.npy").exists())
    ]
    resumed = len(cohort) - len(todo)
    failures = _run(cohort, params, todo, keys, subjects_dir, jobs, progress)
    if failures:
        raise NeuroCNNError(
            f"{len(failures)} subject(s) could not be prepared; the others are kept "
            f"in {partial} and a rerun resumes from there:",
            problems=failures,
        )

    arrays = [subjects_dir / f"{k}.npy" for k in keys]
    affines = [np.load(subjects_dir / f"{k}.affine.npy") for k in keys]
    manifest = cohort.to_frame()
    image_cols = [*cohort.modalities, "mask"]
    manifest = manifest.drop(columns=[c for c in image_cols if c in manifest.columns])
    manifest.insert(0, "index", np.arange(len(cohort)))
    info = {
        "params": params.model_dump(mode="json"),
        "params_hash": spec_hash,
        "neurocnn_version": __version__,
        "modalities": list(cohort.modalities),
        "classes": list(cohort.classes),
        "label_column": cohort.label_column,
        "covariates": list(cohort.covariates),
        "source": str(cohort.source),
        "mask_column": cohort.mask_column,
        "subject_files": [
            {m: str(p) for m, p in [*s.images.items(), *([("mask", s.mask)] if s.mask else [])]}
            for s in cohort.subjects
        ],
        "inputs": hashes,
        "cohort_sha256": cohort_digest(cohort),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": platform.node(),
    }
    write_cache(out, partial, arrays, affines, manifest, info)
    seconds = time.perf_counter() - start
    return PrepareResult(open_cache(out), False, len(todo), resumed, seconds, changed)


def _run(
    cohort: Cohort,
    params: PrepareParams,
    todo: list[int],
    keys: list[str],
    folder: Path,
    jobs: int | None,
    progress: bool,
) -> list[str]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    if not todo:
        return []
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
    failures: list[str] = []
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("preparing", total=len(todo))
        pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=_context(),
            initializer=_init_worker,
            initargs=(jobs, params.registration and params.registration_seed is not None),
        )
        try:
            futures: dict[Future[None], Subject] = {
                pool.submit(_prepare_one, cohort.subjects[i], params, folder, keys[i]): cohort.subjects[i]
                for i in todo
            }
            for fut in as_completed(futures):
                s = futures[fut]
                exc = fut.exception()
                if exc is not None:
                    files = ", ".join(str(p) for p in s.images.values())
                    what = str(exc) if isinstance(exc, NeuroCNNError) else f"{type(exc).__name__}: {exc}"
                    failures.append(f"{s.key} ({files}): {what}")
                bar.advance(task)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    return failures


def _context():  # type: ignore[no-untyped-def]
    # fork works from any script (spawn would need an `if __name__ == "__main__"` guard in the
    # user's script); the parent has run no OpenMP work at this point, so forking is safe
    return get_context("fork" if "fork" in _methods() else "spawn")


def _methods() -> list[str]:
    from multiprocessing import get_all_start_methods

    return get_all_start_methods()


def _init_worker(jobs: int, reproducible_registration: bool = False) -> None:
    # the cores shared out between the worker processes
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = threads
    # A seeded ANTs registration is reproducible only on one thread (on two, runs with the same seed
    # differed), so it gets one, whatever the machine. ITK reads this at the process's first
    # registration and keeps it.
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1" if reproducible_registration else threads


def _prepare_one(subject: Subject, params: PrepareParams, folder: Path, key: str) -> None:
    data, affine = prepare_subject(subject.images, subject.mask, params)
    # write then rename, so that a killed worker never leaves a file that looks finished
    tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
    np.save(tmp, affine)
    os.replace(tmp, folder / f"{key}.affine.npy")
    np.save(tmp, data)
    os.replace(tmp, folder / f"{key}.npy")


def _check_voxel_sizes(cohort: Cohort, params: PrepareParams) -> None:
    """Without --voxel-size (and without registration, which resamples to the template's grid)
    every subject keeps its own voxel size: refuse a cohort whose scans differ, as a network would
    take a 1 mm and a 1.2 mm voxel for the same size. (Subjects' grids may still be centred
    differently: that is what the cache's per-subject affines record.)"""
    if params.voxel_size is not None or params.registration:
        return
    problems = mixed_voxel_sizes(cohort.subjects)
    if problems:
        raise NeuroCNNError(
            f"{cohort.source}: {len(problems)} subject(s) have other voxel sizes than the rest; give "
            "--voxel-size so that every subject is resampled to one resolution (nothing was written):",
            problems=problems,
        )


def _input_files(cohort: Cohort) -> list[Path]:
    files: list[Path] = []
    for s in cohort.subjects:
        files += list(s.images.values()) + ([s.mask] if s.mask else [])
    return files


def _template_digest(params: PrepareParams) -> str:
    """sha256 of a registration template given as a file (its path alone would let an edited
    template reuse arrays registered to the old one); '' when none is read from disk."""
    if not params.registration or params.template == "icbm152_2009":
        return ""
    path = Path(params.template)
    if not path.is_file():
        raise NeuroCNNError(f"registration template {path} not found; give a NIfTI file or icbm152_2009")
    from neurocnn.data.io import file_sha256

    return file_sha256(path)


def _spec_hash(cohort: Cohort, params: PrepareParams, template: str = "") -> str:
    spec = {
        "params": params.model_dump(mode="json"),
        "version": __version__,
        "modalities": list(cohort.modalities),
        "classes": list(cohort.classes),
        "subjects": [
            [s.key, s.label, sorted(s.covariates.items()), [str(p) for p in s.images.values()], str(s.mask)]
            for s in cohort.subjects
        ],
    }
    if template:  # (absent for the built-in template, so that earlier caches stay current)
        spec["template_sha256"] = template
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def _subject_key(subject: Subject, params_key: str, hashes: dict[str, dict[str, object]]) -> str:
    files = [*subject.images.values(), *([subject.mask] if subject.mask else [])]
    # a subject's result depends on its own files and the parameters, not on the other subjects,
    # so adding a subject to a cohort does not redo the others
    digest = hashlib.sha256(params_key.encode())
    digest.update(json.dumps([hashes[str(f)]["sha256"] for f in files]).encode())
    return f"{subject.key}_{digest.hexdigest()[:16]}".replace("/", "_")


def _previous_hashes(out: Path) -> dict[str, dict[str, object]]:
    try:
        return json.loads((out / "cache.json").read_text()).get("inputs", {})  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}
