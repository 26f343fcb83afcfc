"""Synthetic cohorts with known ground truth: the project's embedded dataset (``neurocnn synth``).

Every subject is built from the ICBM152 2009 grey- and white-matter templates that nilearn ships
(no download), on the SPM-style MNI grid (x -90..90, y -126..90, z -72..108 mm; RAS; 61×73×61 at
3 mm, 91×109×91 at 2 mm, 121×145×121 at 1.5 mm). Per subject and modality (in this order):

1. the template, times ``1 - size × w`` for every planted effect the subject carries
   (:mod:`neurocnn.data.effects`);
2. times a smooth multiplicative "anatomy" field ``exp(anatomy_sd × f)`` (``f`` unit-variance noise
   at control points ``field_spacing_mm`` apart, interpolated linearly): regional volumes vary
   between subjects independently of the class;
3. warped by a smooth random displacement (sd ``deformation`` mm at the same control points, shared
   by the subject's modalities), like imperfect spatial normalisation;
4. times a global factor: ``N(1, global_sd)`` (head size; grey and white matter), for grey matter
   also ``1 - age_effect × (age - 50) / 10`` (grey matter loss with age), for FA ``N(1, global_sd/2)``;
5. plus white noise inside the subject's brain mask (sd ``noise`` per voxel at 3 mm, scaled by
   ``(3 / voxel_size)^1.5`` so that the noise per mm³ does not depend on the grid), Gaussian smoothing of
   ``smoothing_fwhm`` mm, then clipped to [0, 1] and rounded to multiples of 1/4096 (exact in
   float32; files compress twice as well).

FA: nilearn ships no FA template and the product may not depend on other data, so a diffusion-like
FA template is derived from the white-matter template: ``FA = mask × (0.1 + 0.7 × WMs²)`` where WMs is
the white-matter probability smoothed with 3 mm FWHM (FA ≈ 0.8 in deep white matter, ≈ 0.1 in grey
matter). It has FA's contrast, not its tract structure.

Randomness: the cohort plan (labels, age, sex, global factors, who carries which effect) comes from
``seed``; each subject's images from ``(seed, subject)``, and each modality from its own stream, so
results do not depend on the number of worker processes, and a subject's grey-matter map is the
same whether or not white matter or FA were asked for.

Outputs in ``out_dir``: ``participants.tsv`` (participant_id, label, age, sex, one column of relative
paths per modality), ``<modality>/sub-XXXX_<modality>.nii.gz`` (float32), ``ground_truth/<effect>.nii.gz``
(each effect's spatial weight, 0..1), ``brain_mask.nii.gz`` and ``cohort.json`` (spec, label order,
grid, effects with regions, planted subjects and observed Cohen's d, per-subject factors, version).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from neurocnn import __version__
from neurocnn.data.effects import (
    MODALITIES,
    Effect,
    Layer,
    apply_layers,
    name_effects,
    plan_effects,
    save_weight,
)
from neurocnn.data.synthetic_spec import SynthSpec, default_spec
from neurocnn.data.templates import load_templates, mni_grid
from neurocnn.errors import NeuroCNNError

__all__ = ["Effect", "SynthSpec", "default_spec", "load_templates", "make_cohort", "mni_grid"]

MODALITY_STREAM = {"gm": 1, "wm": 2, "fa": 3}
QUANTUM = 4096.0  # output values are multiples of 1/QUANTUM
DESCRIPTIONS = {
    "gm": "grey-matter probability (ICBM152 2009 template, nilearn)",
    "wm": "white-matter probability (ICBM152 2009 template, nilearn)",
    "fa": "diffusion-like FA derived from the white-matter template (0..~0.8)",
}


@dataclass
class _Context:
    """What a worker needs to build subjects (sent once per worker process)."""

    spec: SynthSpec
    out_dir: Path
    ext: str
    ids: list[str]
    affine: np.ndarray
    templates: dict[str, np.ndarray]
    layers: list[Layer]
    scale: dict[str, np.ndarray]
    upsample: list[np.ndarray]
    field_shape: tuple[int, int, int]


_WORKER: _Context | None = None


def _init_worker(context: _Context) -> None:
    global _WORKER
    _WORKER = context


def _worker_subject(index: int) -> tuple[int, dict[str, float]]:
    assert _WORKER is not None
    return _make_subject(_WORKER, index)


def _pool_context() -> multiprocessing.context.BaseContext | None:
    """Fork on Linux: workers start at once, share the templates without pickling, and the caller's
    script needs no ``if __name__ == "__main__"`` guard (Python 3.14 makes forkserver the default).
    Workers only use numpy, scipy.ndimage and zlib, so no threads of the parent are needed in them.
    Elsewhere the platform's default (spawn) is used."""
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return None


def _interpolation_matrix(n_out: int, n_in: int, step: float) -> np.ndarray:
    """Linear interpolation from control points ``step`` output voxels apart to ``n_out`` voxels."""
    position = np.arange(n_out) / step
    low = np.minimum(np.floor(position).astype(int), n_in - 2)
    frac = position - low
    matrix = np.zeros((n_out, n_in), dtype=np.float32)
    matrix[np.arange(n_out), low] = 1.0 - frac
    matrix[np.arange(n_out), low + 1] = frac
    return matrix


def _upsample(ctx: _Context, coarse: np.ndarray) -> np.ndarray:
    """Interpolate control-point values ``(n, a, b, c)`` linearly onto the grid ``(n, X, Y, Z)``."""
    ux, uy, uz = ctx.upsample
    # separable interpolation: three small matrix products instead of a full 3D resampling
    return np.einsum("ia,jb,kc,nabc->nijk", ux, uy, uz, coarse, optimize=True)


def _make_subject(ctx: _Context, index: int) -> tuple[int, dict[str, float]]:
    """Build and write one subject's maps; return the mean of each layer's region per map."""
    spec = ctx.spec
    shape = ctx.templates["mask"].shape
    voxel = spec.voxel_size
    rng = np.random.default_rng([spec.seed, index + 1])
    streams = {m: np.random.default_rng([spec.seed, index + 1, MODALITY_STREAM[m]]) for m in spec.modalities}
    # all smooth fields of the subject at once: 3 displacement components, 1 anatomy field per
    # modality, each drawn from its own stream
    coarse = [rng.standard_normal((3, *ctx.field_shape), dtype=np.float32)]
    coarse += [streams[m].standard_normal((1, *ctx.field_shape), dtype=np.float32) for m in streams]
    fields = _upsample(ctx, np.concatenate(coarse))
    # float64 coordinates: map_coordinates converts float32 ones itself, at twice the cost
    coords = np.indices(shape, dtype=np.float64) + fields[:3] * (spec.deformation / voxel)
    mask = ndimage.map_coordinates(ctx.templates["mask"], coords, order=1) > 0.5
    sigma = spec.smoothing_fwhm / 2.355 / voxel
    # `noise` is the sd per voxel at 3 mm; white noise averaged over a voxel of another size has
    # sd ∝ voxel volume^-1/2, so the noise per mm³ (and after smoothing) is the same at any size
    noise_sd = spec.noise * (3.0 / voxel) ** 1.5
    means: dict[str, float] = {}
    for k, modality in enumerate(spec.modalities):
        value = np.array(ctx.templates[modality], dtype=np.float32, order="C")
        apply_layers(value, ctx.layers, modality, index)
        if spec.anatomy_sd > 0:
            value *= np.exp(np.float32(spec.anatomy_sd) * fields[3 + k])
        warped = ndimage.map_coordinates(value, coords, order=1)
        warped *= np.float32(ctx.scale[modality][index])
        if spec.noise > 0:
            noise = streams[modality].standard_normal(shape, dtype=np.float32)
            warped += np.float32(noise_sd) * noise * mask
        if sigma > 0:
            warped = ndimage.gaussian_filter(warped, sigma, mode="constant", truncate=3.0)
        np.clip(warped, 0.0, 1.0, out=warped)
        # 12-bit steps (exact in float32): far finer than any tissue map, and the files compress
        # twice as well and write ~40 % faster than with full float mantissas
        warped = (np.round(warped * QUANTUM) / QUANTUM).astype(np.float32)
        pid = ctx.ids[index]
        img = nib.Nifti1Image(warped, ctx.affine)
        img.set_sform(ctx.affine, code=4)
        img.set_qform(ctx.affine, code=4)
        nib.save(img, str(ctx.out_dir / modality / f"{pid}_{modality}{ctx.ext}"))
        flat = warped.reshape(-1)
        for item in ctx.layers:
            if item.modality == modality:
                means[item.name] = float(flat[item.index].mean())
    return index, means


OWN_ITEMS = ("participants.tsv", "cohort.json", "brain_mask.nii.gz", "ground_truth", *MODALITIES)


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NeuroCNNError(f"output folder {out_dir} is a file; choose a folder path")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise NeuroCNNError(
            f"output folder {out_dir} is not empty; choose a new folder or pass "
            "--overwrite (only the cohort's own files and folders are replaced)"
        )
    clash = [name for name in OWN_ITEMS if (out_dir / name).exists()]
    if clash and not _is_synthetic_cohort(out_dir):
        raise NeuroCNNError(
            f"output folder {out_dir} holds {', '.join(clash)} but is not a cohort made by neurocnn "
            "synth; nothing was replaced. Choose a new folder"
        )


def _is_synthetic_cohort(out_dir: Path) -> bool:
    try:
        record = json.loads((out_dir / "cohort.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("generator") == "neurocnn synth"


def _clear_out_dir(out_dir: Path) -> None:
    """Remove a previous cohort's own files and folders (nothing else) and create the folder."""
    for name in OWN_ITEMS:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def make_cohort(
    spec: SynthSpec,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Generate a synthetic cohort into ``out_dir``.

    Parameters
    ----------
    spec
        The cohort's definition.
    out_dir
        Output folder (created; must be empty unless ``overwrite``).
    workers
        Worker processes (default: 2 on machines with at least 2 cores, 1 for small cohorts).
        Results do not depend on it.
    overwrite
        Replace a previous cohort's files in ``out_dir``.
    progress
        Called as ``progress(done, total)`` after each subject.

    Returns
    -------
    Path
        The ``participants.tsv`` written.
    """
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    shape, affine = mni_grid(spec.voxel_size)
    templates = load_templates(spec.voxel_size)
    n = spec.n_subjects
    rng = np.random.default_rng([spec.seed])

    n_patients = min(max(round(spec.class_balance * n), 1), n - 1)
    is_patient = np.zeros(n, dtype=bool)
    is_patient[rng.permutation(n)[:n_patients]] = True
    low, high = spec.age_range
    age = np.round(rng.uniform(low, high, n) + spec.age_shift * is_patient, 1)
    sex = np.where(rng.random(n) < 0.5, "F", "M")
    global_scale = np.clip(1.0 + spec.global_sd * rng.standard_normal(n), 0.5, 1.5)
    fa_scale = np.clip(1.0 + 0.5 * spec.global_sd * rng.standard_normal(n), 0.5, 1.5)
    age_factor = 1.0 - spec.age_effect * (age - 50.0) / 10.0
    scale = {"gm": global_scale * age_factor, "wm": global_scale, "fa": fa_scale}

    effects = name_effects(spec.effects)
    layers, descriptions, maps = plan_effects(effects, is_patient, rng, shape, affine)
    # only now touch the folder: a wrong region name or spec must not leave files behind
    _clear_out_dir(out_dir)

    ids = [f"sub-{i + 1:04d}" for i in range(n)]
    ext = ".nii.gz" if spec.compress else ".nii"
    for modality in spec.modalities:
        (out_dir / modality).mkdir()
    (out_dir / "ground_truth").mkdir()
    for name, weight in maps.items():
        save_weight(out_dir / "ground_truth" / f"{name}.nii.gz", weight, affine)
    save_weight(out_dir / "brain_mask.nii.gz", templates["mask"], affine)

    # control points of the smooth fields, `step` output voxels apart, covering the grid
    step = spec.field_spacing_mm / spec.voxel_size
    field_shape = tuple(int(np.floor((s - 1) / step)) + 2 for s in shape)
    context = _Context(
        spec=spec,
        out_dir=out_dir,
        ext=ext,
        ids=ids,
        affine=affine,
        templates=templates,
        layers=layers,
        scale=scale,
        upsample=[_interpolation_matrix(s, c, step) for s, c in zip(shape, field_shape, strict=True)],
        field_shape=field_shape,  # type: ignore[arg-type]
    )
    if workers is None:
        workers = 1 if n < 24 else min(2, os.cpu_count() or 1)
    means: list[dict[str, float]] = [{} for _ in range(n)]
    if workers <= 1:
        for done, index in enumerate(range(n), start=1):
            _, means[index] = _make_subject(context, index)
            if progress:
                progress(done, n)
    else:
        with cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=_pool_context(),
            initializer=_init_worker,
            initargs=(context,),
        ) as pool:
            futures = [pool.submit(_worker_subject, i) for i in range(n)]
            for done, future in enumerate(cf.as_completed(futures), start=1):
                index, means[index] = future.result()
                if progress:
                    progress(done, n)

    _describe_observed(descriptions, layers, means, is_patient, ids)
    _write_participants(out_dir, spec, ids, is_patient, age, sex, ext)
    labels = [spec.labels[int(p)] for p in is_patient]
    cohort = {
        "generator": "neurocnn synth",
        "neurocnn_version": __version__,
        "seed": spec.seed,
        "spec": spec.model_dump(mode="json"),
        "labels": list(spec.labels),
        "positive_label": spec.labels[1],
        "n_subjects": n,
        "counts": {label: labels.count(label) for label in spec.labels},
        "grid": {
            "shape": list(shape),
            "voxel_size_mm": spec.voxel_size,
            "affine": affine.tolist(),
            "space": "MNI152 (ICBM 2009 nonlinear templates shipped by nilearn), RAS",
        },
        "modalities": {m: {"folder": m, "description": DESCRIPTIONS[m]} for m in spec.modalities},
        "brain_mask": "brain_mask.nii.gz",
        "effects": descriptions,
        "subjects": [
            {
                "participant_id": pid,
                "label": labels[i],
                "global_scale": round(float(global_scale[i]), 5),
                "gm_scale": round(float(scale["gm"][i]), 5),
                "fa_scale": round(float(fa_scale[i]), 5),
            }
            for i, pid in enumerate(ids)
        ],
    }
    (out_dir / "cohort.json").write_text(json.dumps(cohort, indent=2) + "\n", encoding="utf-8")
    return out_dir / "participants.tsv"


def _write_participants(
    out_dir: Path,
    spec: SynthSpec,
    ids: list[str],
    is_patient: np.ndarray,
    age: np.ndarray,
    sex: np.ndarray,
    ext: str,
) -> None:
    header = ["participant_id", "label", "age", "sex", *spec.modalities]
    lines = ["\t".join(header)]
    for i, pid in enumerate(ids):
        paths = [f"{m}/{pid}_{m}{ext}" for m in spec.modalities]
        row = [pid, spec.labels[int(is_patient[i])], f"{age[i]:.1f}", str(sex[i]), *paths]
        lines.append("\t".join(row))
    (out_dir / "participants.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _cohens_d(reduced: np.ndarray, other: np.ndarray) -> float | None:
    """(mean(other) - mean(reduced)) / pooled sd: positive when the group is lower."""
    if len(reduced) < 2 or len(other) < 2:
        return None
    pooled = np.sqrt(
        ((len(reduced) - 1) * reduced.var(ddof=1) + (len(other) - 1) * other.var(ddof=1))
        / (len(reduced) + len(other) - 2)
    )
    return round(float((other.mean() - reduced.mean()) / pooled), 3) if pooled > 0 else None


def _describe_observed(
    descriptions: list[dict],
    layers: list[Layer],
    means: list[dict[str, float]],
    is_patient: np.ndarray,
    ids: list[str],
) -> None:
    """Add planted subjects and observed separations to the effect descriptions, in place."""
    by_name = {item.name: item for item in layers}
    for info in descriptions:
        for part in info.get("parts", [info]):
            item = by_name[part["name"]]
            values = np.array([m[item.name] for m in means])
            carriers = item.magnitude > 0
            part["planted"] = {ids[i]: round(float(item.magnitude[i]), 4) for i in np.flatnonzero(carriers)}
            part["observed_d"] = _cohens_d(values[carriers], values[~carriers])
            part["observed_d_between_classes"] = _cohens_d(values[is_patient], values[~is_patient])
