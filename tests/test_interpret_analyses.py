"""Group maps, atlas scores, agreement, masked re-evaluation, first layer, voxel t-tests, sanity checks."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from neurocnn.errors import NeuroCNNError
from neurocnn.interpret import (
    agreement_table,
    atlas_on_grid,
    binarize,
    compare_features,
    conjoined_map,
    dice,
    first_layer_features,
    grad_cam,
    group_maps,
    load_map,
    localisation,
    masked_accuracy,
    model_randomisation,
    planted_regions,
    randomised_copy,
    rank_correlation,
    region_ranks,
    region_scores,
    save_map,
    save_subject_maps,
    voxel_agreement,
    voxelwise_ttest,
)
from neurocnn.models import build

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "atlases"
GRID = (10, 12, 8)


def grid_affine(voxel: float = 4.0) -> np.ndarray:
    a = np.diag([voxel, voxel, voxel, 1.0])
    a[:3, 3] = [-18.0, -22.0, -14.0]
    return a


def write_atlas(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A label map on a 2 mm grid stored left-right flipped (LAS), with a CSV table.

    Region 1 fills the left half (x < 0 mm) of a box, region 2 the right half, region 3 a small cube.
    Returns the paths and the expected labels on the 4 mm RAS grid of `grid_affine`.
    """
    ras = grid_affine()
    centres = nib.affines.apply_affine(ras, np.stack(np.indices(GRID), -1).reshape(-1, 3)).reshape(*GRID, 3)
    expected = np.zeros(GRID, np.uint16)
    box = (np.abs(centres[..., 1]) < 14) & (np.abs(centres[..., 2]) < 10)
    expected[box & (centres[..., 0] < 0)] = 1
    expected[box & (centres[..., 0] > 0)] = 2
    expected[(np.abs(centres - [10, 10, 6]) < 3).all(-1)] = 3
    # the same labels on a 2 mm grid stored with x running right-to-left
    fine_shape = (2 * GRID[0], 2 * GRID[1], 2 * GRID[2])
    las = np.diag([-2.0, 2.0, 2.0, 1.0])
    las[:3, 3] = [ras[0, 3] + 4 * (GRID[0] - 1) + 1, ras[1, 3] - 1, ras[2, 3] - 1]
    ijk = np.stack(np.indices(fine_shape), -1).reshape(-1, 3)
    mm = nib.affines.apply_affine(las, ijk)
    coarse = np.rint(nib.affines.apply_affine(np.linalg.inv(ras), mm)).astype(int)
    ok = ((coarse >= 0) & (coarse < GRID)).all(1)
    fine = np.zeros(len(ijk), np.uint16)
    fine[ok] = expected[tuple(coarse[ok].T)]
    image = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(fine.reshape(fine_shape), las), str(image))
    table = tmp_path / "labels.csv"
    table.write_text("index,name\n1,Left_Box\n2,Right_Box\n3,Small_Cube\n4,Absent_Region\n")
    return image, table, expected


def test_atlas_is_resampled_through_the_affines_and_a_region_map_scores_one(tmp_path: Path) -> None:
    image, table, expected = write_atlas(tmp_path)
    atlas = atlas_on_grid(image, GRID, grid_affine(), labels=table)
    np.testing.assert_array_equal(atlas.labels, expected)
    assert set(atlas.names) == {1, 2, 3}  # absent regions are dropped
    scores = region_scores((atlas.labels == 1).astype(np.float32), atlas)
    assert scores.loc[0, "region"] == "Left_Box" and scores.loc[0, "score"] == pytest.approx(1.0)
    assert scores["score"].iloc[1:].eq(0).all() and scores["score"].sum() == pytest.approx(1.0)
    assert list(scores["rank"]) == [1, 2, 3]
    # a blind resize of the flipped atlas would have put region 1 on the right
    flipped = region_scores((atlas.labels == 2).astype(np.float32), atlas)
    assert flipped.loc[0, "region"] == "Right_Box"


def test_region_scores_fraction_score_and_mean_attribution(tmp_path: Path) -> None:
    image, table, _ = write_atlas(tmp_path)
    atlas = atlas_on_grid(image, GRID, grid_affine(), labels=table)
    values = np.zeros(GRID, np.float32)
    left = np.argwhere(atlas.labels == 1)
    half = left[: len(left) // 2]
    values[tuple(half.T)] = 1.0
    values[atlas.labels == 3] = 1.0
    scores = region_scores(values, atlas).set_index("region")
    assert scores.loc["Left_Box", "fraction"] == pytest.approx(len(half) / len(left))
    assert scores.loc["Small_Cube", "fraction"] == pytest.approx(1.0)
    total = scores["fraction"].sum()
    assert scores.loc["Small_Cube", "score"] == pytest.approx(1.0 / total)
    assert scores.loc["Small_Cube", "mean_attribution"] == pytest.approx(1.0)
    assert scores["mass"].sum() == pytest.approx(1.0)
    top = region_scores(values, atlas, top_percent=1.0)
    assert top["n_inside"].sum() >= 1
    with pytest.raises(NeuroCNNError, match="differs from the atlas grid"):
        region_scores(np.zeros((3, 3, 3)), atlas)


@pytest.mark.shared_data
def test_jhu_white_matter_atlas_region_scores_one() -> None:
    image = SHARED / "JHU_space-MNI152NLin6_res-2x2x2.nii.gz"
    if not image.exists():
        pytest.skip("../shared/data is absent (the generated atlas above covers the same code)")
    img = nib.load(str(image))
    affine = img.affine.copy()
    affine[:3, :3] *= 2  # the maps' grid: 4 mm, same origin
    shape = tuple(s // 2 for s in img.shape[:3])
    atlas = atlas_on_grid(image, shape, affine, labels=image.with_suffix("").with_suffix(".json"))
    cc = atlas.region_mask("Corpus_Callosum_Genu")
    scores = region_scores(cc.astype(np.float32), atlas)
    assert scores.loc[0, "region"] == "Corpus_Callosum_Genu"
    assert scores.loc[0, "score"] == pytest.approx(1.0)


def test_dice_of_known_masks_and_what_the_seed_called_dice() -> None:
    a, b = np.zeros((10, 10, 10), bool), np.zeros((10, 10, 10), bool)
    a[0, 0, :10] = True  # 10 voxels
    b[0, 0, 5:10] = True  # 5 voxels, all inside a
    b[1, 0, :5] = True  # 5 more outside a
    assert dice(a, b) == pytest.approx(2 * 5 / 20)
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0
    assert np.isnan(dice(np.zeros(3, bool), np.zeros(3, bool)))
    assert voxel_agreement(a, b) == pytest.approx(1 - 10 / 1000)  # background agreement inflates it


def test_rank_correlation_and_agreement_table() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((6, 7, 5))
    assert rank_correlation(m, 2 * m + 1) == pytest.approx(1.0)
    assert rank_correlation(m, -m) == pytest.approx(-1.0)
    assert np.isnan(rank_correlation(m, np.ones_like(m)))
    maps = {"gradcam": m, "guided_backprop": m**2, "perturbation": rng.random(m.shape)}
    table = agreement_table(maps)
    assert len(table) == 3 and set(table["threshold_a"]) <= {"0.65", "0.04"}
    row = table[(table.method_a == "gradcam") & (table.method_b == "guided_backprop")].iloc[0]
    assert row["spearman"] == pytest.approx(1.0)
    top = agreement_table({"a": m, "b": m}, top_percent=10)
    assert top.loc[0, "dice"] == 1.0 and top.loc[0, "voxels_a"] == round(m.size * 0.1)


def test_binarize_thresholds_on_the_unit_scale_and_top_percent() -> None:
    m = np.arange(100, dtype=np.float32).reshape(4, 5, 5) * 2
    assert binarize(m, 0.65).sum() == (m / m.max() >= 0.65).sum()
    assert binarize(m, top_percent=10).sum() == 10
    mask = np.zeros(m.shape, bool)
    mask[0] = True
    assert binarize(m, top_percent=40, mask=mask).sum() == 10 and not binarize(m, 0.0, mask=mask)[1:].any()
    with pytest.raises(NeuroCNNError):
        binarize(m)


def test_group_maps_conjoined_and_nifti_files(tmp_path: Path) -> None:
    maps = np.zeros((4, 3, 3, 3), np.float32)
    maps[0, 0, 0, 0], maps[1, 0, 0, 0] = 2.0, 10.0  # class 0 (normalised: both 1)
    maps[2, 1, 1, 1], maps[3, 2, 2, 2] = 1.0, 5.0  # class 1
    groups = group_maps(maps, [0, 0, 1, 1], ["control", "patient"])
    assert groups["control"][0, 0, 0] == pytest.approx(1.0)
    assert groups["patient"][1, 1, 1] == pytest.approx(0.5) and groups["patient"][2, 2, 2] == pytest.approx(
        0.5
    )
    raw = group_maps(maps, [0, 0, 1, 1], ["control", "patient"], normalise=False)
    assert raw["control"][0, 0, 0] == pytest.approx(6.0)
    both = conjoined_map(groups)
    assert both.sum() == pytest.approx(groups["control"].sum() + groups["patient"].sum())
    affine = grid_affine(3.0)
    data, back = load_map(save_map(both, affine, tmp_path / "g.nii.gz"))
    np.testing.assert_allclose(data, both)
    np.testing.assert_allclose(back, affine)
    import pandas as pd

    path = save_subject_maps(maps, affine, tmp_path / "subjects.nii.gz", pd.DataFrame({"id": list("abcd")}))
    assert nib.load(str(path)).shape == (3, 3, 3, 4)
    assert (tmp_path / "subjects.tsv").read_text().splitlines()[1] == "a"


class Threshold(nn.Module):
    """Class 1 when the mean of a block exceeds 0.5."""

    num_classes = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, :, :4, :4, :4].mean((1, 2, 3, 4)) - 0.5
        return torch.stack([-s, s], 1)


def test_masked_accuracy_depends_on_what_the_mask_keeps() -> None:
    y = np.array([0, 1] * 10)
    x = torch.zeros(20, 1, 8, 8, 8)
    x[y == 1, :, :4, :4, :4] = 1.0
    keep, drop = np.zeros((8, 8, 8), np.float32), np.ones((8, 8, 8), np.float32)
    keep[:4, :4, :4] = 1.0
    drop[:4, :4, :4] = 0.0
    table = masked_accuracy(Threshold(), x, y, {"keep": keep, "drop": drop}).set_index("mask")
    assert table.loc["none", "accuracy"] == 1.0 and table.loc["keep", "accuracy"] == 1.0
    assert table.loc["drop", "accuracy"] == 0.5 and table.loc["drop", "balanced_accuracy"] == 0.5


def test_first_layer_features_and_fdr_tests() -> None:
    torch.manual_seed(0)
    net = build("mrinet", input_shape=(12, 12, 12), widths=(4, 8))
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 12)
    x = torch.as_tensor(rng.standard_normal((24, 1, 12, 12, 12)), dtype=torch.float32)
    x[y == 1] += 2.0  # a global shift changes every first-layer map's mean
    feats = first_layer_features(net, x)
    assert feats.layer == "features.block1.relu"
    assert feats.mean.shape == (24, 4) and feats.entropy.shape == (24, 4)
    assert (feats.entropy >= 0).all() and (feats.entropy <= 8).all()  # at most log2(256) bits
    table = compare_features(feats, y, ["control", "patient"])
    assert {"mean_control", "mean_patient", "q", "significant"} <= set(table.columns)
    assert len(table) == 8 and (table["q"] >= table["p"] - 1e-12).all()
    assert table[table.measure == "mean"]["significant"].any()
    pooled = first_layer_features(net, x, layer="features.block1")
    assert pooled.mean.shape == (24, 4)


def test_voxelwise_ttest_finds_the_planted_block_with_fdr(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y = np.array([0, 1] * 20)
    images = rng.standard_normal((40, 10, 10, 10))
    images[y == 1, :3, :3, :3] += 3.0
    test = voxelwise_ttest(images, y)
    block = np.zeros((10, 10, 10), bool)
    block[:3, :3, :3] = True
    assert test.significant[block].all()
    assert test.significant[~block].sum() <= 5 and (test.t[block] > 0).all()
    paths = test.save(tmp_path, grid_affine(3.0))
    assert all(p.exists() for p in paths)
    with pytest.raises(NeuroCNNError, match="labels 0 and 1"):
        voxelwise_ttest(images, np.zeros(40))


def test_randomised_copy_and_the_model_randomisation_table() -> None:
    torch.manual_seed(0)
    net = build("mrinet", input_shape=(20, 22, 20), widths=(4, 8))  # a 3×3×3 Grad-CAM grid
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rnd = randomised_copy(net, seed=3)
    assert not torch.equal(rnd.features.block1.conv.weight, net.features.block1.conv.weight)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])
    x = torch.randn(3, 1, 20, 22, 20)
    targets = torch.tensor([0, 1, 0])

    def method(m: nn.Module, xx: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return grad_cam(m, xx, t)

    table = model_randomisation(method, net, x, targets, cascade=True)
    assert set(table["randomised"]) == {
        "head.fc",
        "features.block2.bn",
        "features.block2.conv",
        "features.block1.bn",
        "features.block1.conv",
        "all",
    }
    assert len(table) == 6 * 3 and table["spearman"].dropna().between(-1, 1).all()
    assert (table.loc[table.randomised == "all", "spearman"] < 0.99).all()
    untouched = randomised_copy(net, layers=[])
    for k, v in untouched.state_dict().items():
        torch.testing.assert_close(v, before[k])
    reused = model_randomisation(method, net, x, targets, trained_maps=method(net, x, targets))
    np.testing.assert_allclose(reused["spearman"], table.loc[table.randomised == "all", "spearman"])


def test_localisation_and_planted_regions_of_a_generated_cohort(tmp_path: Path) -> None:
    image, table, expected = write_atlas(tmp_path)
    cohort = tmp_path / "cohort"
    (cohort / "ground_truth").mkdir(parents=True)
    sphere = np.zeros(GRID, np.float32)
    sphere[1:3, 1:3, 1:3] = 0.8
    nib.save(nib.Nifti1Image(sphere, grid_affine()), str(cohort / "ground_truth" / "blob.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones(GRID, np.uint8), grid_affine()), str(cohort / "brain_mask.nii.gz"))
    effects = [
        {
            "name": "gm",
            "kind": "atlas",
            "atlas": str(image),
            "atlas_labels": str(table),
            "ground_truth": "ground_truth/none.nii.gz",
            "regions": [{"label": 1, "name": "Left_Box"}, {"label": 3, "name": "Small_Cube"}],
        },
        {"name": "blob", "kind": "sphere", "ground_truth": "ground_truth/blob.nii.gz"},
    ]
    (cohort / "cohort.json").write_text(json.dumps({"effects": effects, "brain_mask": "brain_mask.nii.gz"}))
    masks, brain, _ = planted_regions(cohort, GRID, grid_affine())
    assert set(masks) == {"Left_Box", "Small_Cube", "blob"} and brain.all()
    np.testing.assert_array_equal(masks["Left_Box"], expected == 1)
    assert masks["blob"].sum() == 8
    loc = localisation(masks["Left_Box"].astype(np.float32), masks, brain).set_index("region")
    share = masks["Left_Box"].sum() / brain.size
    assert loc.loc["Left_Box", "mass_share"] == pytest.approx(1.0)
    assert loc.loc["Left_Box", "enrichment"] == pytest.approx(1 / share)
    assert loc.loc["blob", "mass_share"] == 0.0 and "all planted" in loc.index
    atlas = atlas_on_grid(image, GRID, grid_affine(), labels=table)
    ranks = region_ranks(region_scores(masks["Left_Box"].astype(np.float32), atlas), ["Left_Box", "Nope"])
    assert ranks == {"Left_Box": 1, "Nope": None}
