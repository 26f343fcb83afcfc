"""Sanity checks that the seeds did not have: model randomisation and ground-truth localisation.

- Model randomisation (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018): maps of
  the trained model against maps of the same architecture with re-initialised weights. A method
  whose maps barely change explains the input, not the model. Reported per subject as the Spearman
  rank correlation inside the brain; ``cascade`` re-initialises the parametrised layers one by one
  from the output down, as in the paper's cascading test.
- Ground-truth localisation on synthetic cohorts (`neurocnn.data.synthetic`), whose planted
  regions are known: the share of attribution mass inside each planted region against that
  region's share of the brain (enrichment = mass share / volume share; 1 = no better than chance),
  and the rank of each planted region in the atlas table of the map.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from neurocnn.atlases import resample_labels_to
from neurocnn.errors import NeuroCNNError
from neurocnn.interpret.agreement import rank_correlation
from neurocnn.interpret.regions import atlas_on_grid

__all__ = [
    "atlas_for",
    "check_randomisable",
    "localisation",
    "model_randomisation",
    "planted_regions",
    "randomised_copy",
    "region_ranks",
]

RANDOMISATION_SEED_OFFSET = 0x5EED_0000

Method = Callable[[nn.Module, Tensor, Tensor], Tensor]
"""(model, inputs, targets) -> (N, *spatial) maps."""


def _own_parameters(module: nn.Module) -> list[nn.Parameter]:
    """A module's own parameters, those it keeps in a ParameterList/Dict included (the PIF layer)."""
    params = list(module.parameters(recurse=False))
    for child in module.children():
        if isinstance(child, nn.ParameterList | nn.ParameterDict):
            params += list(child.parameters())
    return params


def _parametrised(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters and can re-initialise them, in forward (definition) order."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if hasattr(m, "reset_parameters") and _own_parameters(m)
    ]


def check_randomisable(model: nn.Module) -> None:
    """Refuse a model with parameters no ``reset_parameters`` reaches: its 'randomised' copy would
    keep trained weights and the test would understate how much maps depend on them."""
    _check_covered(model)


def _check_covered(model: nn.Module) -> None:
    """Refuse a model with parameters no ``reset_parameters`` reaches: its 'randomised' copy would
    keep trained weights and the test would understate how much maps depend on them."""
    covered = {id(p) for _, m in _parametrised(model) for p in _own_parameters(m)}
    left = [name for name, p in model.named_parameters() if id(p) not in covered]
    if left:
        raise NeuroCNNError(
            f"model randomisation cannot re-draw {len(left)} parameter(s) "
            f"({', '.join(left[:3])}): their module has no reset_parameters()"
        )


def randomised_copy(model: nn.Module, *, seed: int = 0, layers: Sequence[str] | None = None) -> nn.Module:
    """A copy of ``model`` with the parameters (and BatchNorm statistics) of ``layers`` (default:
    all parametrised modules) re-initialised by their own ``reset_parameters``."""
    clone = copy.deepcopy(model)
    chosen = set(layers) if layers is not None else None
    with torch.random.fork_rng(devices=[]):
        # offset, so that seed 0 does not re-draw a model that was initialised with seed 0
        torch.manual_seed(RANDOMISATION_SEED_OFFSET + seed)
        for name, module in _parametrised(clone):
            if chosen is None or name in chosen:
                module.reset_parameters()
    return clone


def model_randomisation(
    method: Method,
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    mask: np.ndarray | None = None,
    seed: int = 0,
    cascade: bool = False,
    trained_maps: Tensor | None = None,
) -> pd.DataFrame:
    """Rank correlation between maps of the trained and of randomised models, per subject.

    Parameters
    ----------
    method
        ``method(model, inputs, targets) -> maps``; e.g. ``lambda m, x, t: grad_cam(m, x, t)``.
    targets
        The classes explained (the trained model's predictions), kept for the randomised model.
    mask
        Voxels compared (the brain).
    cascade
        Also randomise cumulatively from the last parametrised layer down to the first.
    trained_maps
        The trained model's maps, if already computed.

    Returns
    -------
    pandas.DataFrame
        Columns ``randomised`` (``"all"`` or the deepest layer reset so far), ``subject`` (row of
        ``inputs``), ``spearman`` (NaN where either map is constant, e.g. all zero).
    """
    _check_covered(model)
    trained = method(model, inputs, targets) if trained_maps is None else trained_maps
    steps: list[tuple[str, list[str] | None]] = [("all", None)]
    if cascade:
        names = [n for n, _ in _parametrised(model)][::-1]
        steps = [(names[i], names[: i + 1]) for i in range(len(names))] + steps
    rows = []
    for label, layers in steps:
        maps = method(randomised_copy(model, seed=seed, layers=layers), inputs, targets)
        for i in range(len(inputs)):
            rows.append(
                {
                    "randomised": label,
                    "subject": i,
                    "spearman": rank_correlation(trained[i].numpy(), maps[i].numpy(), mask),
                }
            )
    return pd.DataFrame(rows, columns=["randomised", "subject", "spearman"])


def planted_regions(
    cohort: Path | str, shape: tuple[int, ...], affine: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray, list[dict]]:
    """The planted regions of a synthetic cohort on a grid (nearest neighbour through the affines).

    Parameters
    ----------
    cohort
        The folder written by `neurocnn synth` (with ``cohort.json``).
    shape, affine
        The grid of the maps (e.g. the prepared cache's).

    Returns
    -------
    (regions, brain, effects)
        ``{region name: boolean mask}`` (atlas regions by name; sphere and other effects by effect
        name, from their ground-truth weight map), the cohort's brain mask on the grid, and the
        effect records of ``cohort.json``.
    """
    folder = Path(cohort)
    record_path = folder / "cohort.json"
    if not record_path.is_file():
        raise NeuroCNNError(
            f"{folder} is not a synthetic cohort (no cohort.json); make one with `neurocnn synth`"
        )
    record = json.loads(record_path.read_text(encoding="utf-8"))
    grid = (tuple(int(s) for s in shape[:3]), np.asarray(affine, float))
    regions: dict[str, np.ndarray] = {}
    for effect in record.get("effects", []):
        for part in effect.get("parts", [effect]):
            truth_path = folder / part.get("ground_truth", effect.get("ground_truth", ""))
            truth = _binary_on_grid(truth_path, grid) if truth_path.is_file() else None
            if part.get("kind") == "atlas" and part.get("regions"):
                atlas = atlas_on_grid(part["atlas"], grid[0], grid[1], labels=part.get("atlas_labels"))
                for region in part["regions"]:
                    regions[region["name"]] = atlas.labels == int(region["label"])
            elif truth is not None:
                regions[part.get("name") or effect["name"]] = truth
    brain_path = folder / str(record.get("brain_mask", "brain_mask.nii.gz"))
    brain = _binary_on_grid(brain_path, grid) if brain_path.is_file() else np.ones(grid[0], bool)
    return regions, brain, record.get("effects", [])


def _binary_on_grid(path: Path, grid: tuple[tuple[int, ...], np.ndarray]) -> np.ndarray:
    img = nib.load(str(path))
    data = (np.asarray(img.dataobj) > 0).astype(np.uint8)
    return np.asarray(resample_labels_to(nib.Nifti1Image(data, img.affine), grid).dataobj) > 0


def localisation(values: np.ndarray, regions: dict[str, np.ndarray], brain: np.ndarray) -> pd.DataFrame:
    """Attribution mass in each region against the region's share of the brain.

    Parameters
    ----------
    values
        A non-negative (*spatial) map (negative values are set to 0).
    regions
        ``{name: boolean mask}``; a row ``"all planted"`` for their union is added.
    brain
        Boolean brain mask; mass and volume are counted inside it only.

    Returns
    -------
    pandas.DataFrame
        Columns ``region, n_voxels, volume_share, mass_share, enrichment``.
    """
    a = np.clip(np.asarray(values, dtype=np.float64), 0, None)
    brain = np.asarray(brain, bool)
    total_mass = float(a[brain].sum())
    total_vox = int(brain.sum())
    union = np.zeros_like(brain)
    rows = []
    items = list(regions.items())
    for _, m in items:
        union |= m
    if len(items) > 1:
        items.append(("all planted", union))
    for name, m in items:
        inside = np.asarray(m, bool) & brain
        volume = inside.sum() / total_vox if total_vox else float("nan")
        mass = a[inside].sum() / total_mass if total_mass > 0 else float("nan")
        rows.append(
            {
                "region": name,
                "n_voxels": int(inside.sum()),
                "volume_share": float(volume),
                "mass_share": float(mass),
                "enrichment": float(mass / volume) if volume > 0 and np.isfinite(mass) else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=["region", "n_voxels", "volume_share", "mass_share", "enrichment"])


def region_ranks(table: pd.DataFrame, names: Sequence[str], by: str | None = None) -> dict[str, int | None]:
    """Rank of each named region in a `region_scores` table (None when absent from the grid).

    ``by``: rank by this column, highest first (ties share the best rank), instead of the table's
    ``rank`` (S3's score).
    """
    rank = table["rank"] if by is None else table[by].rank(ascending=False, method="min")
    by_name = dict(zip(table["region"], rank, strict=True))
    return {n: (int(by_name[n]) if n in by_name else None) for n in names}


def atlas_for(cohort_effects: list[dict]) -> str | None:
    """The atlas of a cohort's first atlas effect, as a bundled name or ``image:labels``."""
    for effect in cohort_effects:
        for part in effect.get("parts", [effect]):
            if part.get("kind") == "atlas":
                labels = part.get("atlas_labels")
                return f"{part['atlas']}:{labels}" if labels else str(part["atlas"])
    return None
