"""Synthetic cohorts: files, determinism, and that the planted effects are where the truth says."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from neurocnn.atlas_labels import find_labels
from neurocnn.atlases import load_atlas, resample_labels_to
from neurocnn.commands import synth as synth_cmd
from neurocnn.data.synthetic import (
    QUANTUM,
    Effect,
    SynthSpec,
    default_spec,
    load_templates,
    make_cohort,
    mni_grid,
)
from neurocnn.errors import NeuroCNNError

VOXEL = 6.0
GM_REGIONS = ["Temporal_Mid_L", "Frontal_Sup_2_R"]
FA_CENTER, FA_RADIUS = (-28.0, -10.0, 30.0), 14.0


def _effects(*, fa: bool = True, interaction: bool = True) -> list[Effect]:
    effects = [
        Effect(kind="atlas", name="gm_atlas", atlas="aal2", regions=GM_REGIONS, size=0.3),
    ]
    if interaction:
        effects.append(
            Effect(
                kind="interaction",
                name="xor",
                parts=[
                    Effect(kind="sphere", center_mm=(40.0, -60.0, 40.0), radius_mm=14, size=0.3),
                    Effect(kind="sphere", center_mm=(-40.0, 20.0, 10.0), radius_mm=14, size=0.3),
                ],
            )
        )
    if fa:
        effects.append(
            Effect(
                kind="sphere",
                name="fa_sphere",
                modality="fa",
                center_mm=FA_CENTER,
                radius_mm=FA_RADIUS,
                size=0.3,
            )
        )
    return effects


def _spec(**changes: object) -> SynthSpec:
    base = {
        "n_subjects": 16,
        "voxel_size": VOXEL,
        "modalities": ("gm", "wm", "fa"),
        "effects": _effects(),
        "seed": 3,
    }
    base.update(changes)
    return SynthSpec(**base)  # type: ignore[arg-type]


def _load(folder: Path, rel: str) -> nib.Nifti1Image:
    return nib.load(str(folder / rel))


def _stack(folder: Path, table: pd.DataFrame, modality: str) -> np.ndarray:
    return np.stack([_load(folder, p).get_fdata(dtype=np.float32) for p in table[modality]])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    make_cohort(_spec(), out, workers=1)
    return out


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No noise, deformation, anatomy, scaling, age or variability: maps = template × effects."""
    out = tmp_path_factory.mktemp("synth") / "clean"
    effects = [
        e.model_copy(
            update={
                "variability": 0.0,
                "parts": [p.model_copy(update={"variability": 0.0}) for p in e.parts],
            }
        )
        for e in _effects()
    ]
    spec = _spec(
        n_subjects=8,
        effects=effects,
        noise=0.0,
        smoothing_fwhm=0.0,
        deformation=0.0,
        anatomy_sd=0.0,
        global_sd=0.0,
        age_effect=0.0,
    )
    make_cohort(spec, out, workers=1)
    return out


def test_grid_is_spm_mni_box_ras() -> None:
    for voxel, shape in ((3.0, (61, 73, 61)), (2.0, (91, 109, 91)), (1.5, (121, 145, 121))):
        got, affine = mni_grid(voxel)
        assert got == shape
        assert nib.aff2axcodes(affine) == ("R", "A", "S")
        np.testing.assert_allclose(affine[:3, 3], [-90, -126, -72])
        corner = affine @ np.array([*(s - 1 for s in shape), 1.0])
        np.testing.assert_allclose(corner[:3], [90, 90, 108])


def test_templates_from_nilearn_without_download() -> None:
    templates = load_templates(VOXEL)
    assert set(templates) == {"gm", "wm", "fa", "mask"}
    shape, _ = mni_grid(VOXEL)
    for name, array in templates.items():
        assert array.shape == shape and array.dtype == np.float32, name
        assert array.min() >= 0.0 and array.max() <= 1.0
    fa, wm, mask = templates["fa"], templates["wm"], templates["mask"] > 0
    # diffusion-like: high in deep white matter, low in grey matter, 0 outside the brain
    assert fa[wm > 0.9].mean() > 0.6 > 0.2 > fa[(templates["gm"] > 0.6) & mask].mean()
    assert fa[~mask].max() == 0.0 and fa.max() <= 0.8 + 1e-6


def test_files_written_as_described(cohort: Path) -> None:
    table = pd.read_csv(cohort / "participants.tsv", sep="\t")
    assert list(table.columns) == ["participant_id", "label", "age", "sex", "gm", "wm", "fa"]
    assert table["participant_id"].tolist() == [f"sub-{i:04d}" for i in range(1, 17)]
    assert sorted(table["label"].value_counts().to_dict().items()) == [
        ("control", 8),
        ("patient", 8),
    ]
    assert set(table["sex"]) <= {"F", "M"} and table["age"].between(20, 80).all()
    assert table.loc[0, "gm"] == "gm/sub-0001_gm.nii.gz"
    info = json.loads((cohort / "cohort.json").read_text())
    assert info["labels"] == ["control", "patient"] and info["positive_label"] == "patient"
    assert info["seed"] == 3 and info["neurocnn_version"]
    assert SynthSpec.model_validate(info["spec"]) == _spec()
    shape, affine = mni_grid(VOXEL)
    files = [p for m in ("gm", "wm", "fa") for p in table[m]]
    files += [e["ground_truth"] for e in info["effects"]] + ["brain_mask.nii.gz"]
    files += [p["ground_truth"] for e in info["effects"] for p in e.get("parts", [])]
    for rel in files:
        img = _load(cohort, rel)
        assert img.shape == shape, rel
        np.testing.assert_allclose(img.affine, affine)
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert img.get_data_dtype() == np.float32
    data = _load(cohort, table.loc[0, "gm"]).get_fdata()
    assert data.min() >= 0.0 and data.max() <= 1.0
    np.testing.assert_array_equal(np.round(data * QUANTUM), data * QUANTUM)
    # planted subjects are recorded per effect and are patients for plain effects
    patients = set(table.loc[table["label"] == "patient", "participant_id"])
    gm = next(e for e in info["effects"] if e["name"] == "gm_atlas")
    assert set(gm["planted"]) == patients
    assert [r["name"] for r in gm["regions"]] == GM_REGIONS


def test_deterministic_for_a_seed_and_workers(cohort: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    make_cohort(_spec(), again, workers=2)
    table = pd.read_csv(cohort / "participants.tsv", sep="\t")
    assert table.equals(pd.read_csv(again / "participants.tsv", sep="\t"))
    for modality in ("gm", "wm", "fa"):
        np.testing.assert_array_equal(_stack(cohort, table, modality), _stack(again, table, modality))
    for rel in table["gm"][:3]:  # gzip without timestamps: identical files
        assert (cohort / rel).read_bytes() == (again / rel).read_bytes()
    assert (cohort / "cohort.json").read_text() == (again / "cohort.json").read_text()

    other = tmp_path / "other"
    make_cohort(_spec(n_subjects=4, seed=4), other, workers=1)
    a = _load(cohort, table.loc[0, "gm"]).get_fdata()
    b = _load(other, "gm/sub-0001_gm.nii.gz").get_fdata()
    assert not np.array_equal(a, b)


def test_planted_effect_is_there(cohort: Path) -> None:
    table = pd.read_csv(cohort / "participants.tsv", sep="\t")
    gm = _stack(cohort, table, "gm")
    patient = (table["label"] == "patient").to_numpy()
    diff = gm[~patient].mean(0) - gm[patient].mean(0)
    truth = _load(cohort, "ground_truth/gm_atlas.nii.gz").get_fdata() > 0
    template = load_templates(VOXEL)["gm"]
    # outside: grey matter far from any planted region (the smoothing spreads effects a little)
    from scipy.ndimage import binary_dilation

    planted = truth | (_load(cohort, "ground_truth/xor.nii.gz").get_fdata() > 0)
    outside = (template > 0.4) & ~binary_dilation(planted, iterations=2)
    inside = truth & (template > 0.4)
    assert diff[inside].mean() > 0.06
    assert abs(diff[outside].mean()) < diff[inside].mean() / 4
    info = json.loads((cohort / "cohort.json").read_text())
    gm_info = next(e for e in info["effects"] if e["name"] == "gm_atlas")
    assert gm_info["observed_d"] > 1.0


def test_ground_truth_maps_match_atlas_and_sphere(cohort: Path) -> None:
    shape, affine = mni_grid(VOXEL)
    img, labels = load_atlas("aal2")
    values = find_labels(labels, GM_REGIONS)
    expected = np.isin(np.asarray(resample_labels_to(img, (shape, affine)).dataobj), values)
    truth = _load(cohort, "ground_truth/gm_atlas.nii.gz").get_fdata()
    np.testing.assert_array_equal(truth > 0, expected)
    assert set(np.unique(truth)) == {0.0, 1.0}
    ijk = np.indices(shape).reshape(3, -1)
    xyz = (affine[:3, :3] @ ijk + affine[:3, 3:4]).T
    ball = (np.linalg.norm(xyz - np.array(FA_CENTER), axis=1) <= FA_RADIUS).reshape(shape)
    np.testing.assert_array_equal(_load(cohort, "ground_truth/fa_sphere.nii.gz").get_fdata(), ball)


def test_noise_free_change_exactly_where_planted(clean: Path) -> None:
    table = pd.read_csv(clean / "participants.tsv", sep="\t")
    info = json.loads((clean / "cohort.json").read_text())
    templates = load_templates(VOXEL)
    truth = {
        name: _load(clean, f"ground_truth/{name}.nii.gz").get_fdata() > 0
        for name in ("gm_atlas", "xor_a", "xor_b", "fa_sphere")
    }
    planted = {p["name"]: p["planted"] for e in info["effects"] for p in e.get("parts", [e])}
    tol = 1.0 / QUANTUM
    for _, row in table.iterrows():
        pid = row["participant_id"]
        for modality in ("gm", "wm", "fa"):
            data = _load(clean, row[modality]).get_fdata()
            template = templates[modality]
            changed = np.abs(data - template) > tol
            where = np.zeros(data.shape, dtype=bool)
            for name, carriers in planted.items():
                part_modality = "fa" if name == "fa_sphere" else "gm"
                if pid in carriers and part_modality == modality:
                    where |= truth[name]
                    # the recorded magnitude is the fractional reduction actually applied
                    ratio = data[truth[name] & (template > 0.3)] / template[truth[name] & (template > 0.3)]
                    np.testing.assert_allclose(ratio, 1 - carriers[pid], atol=2e-3)
            assert not (changed & ~where).any(), (pid, modality)
            assert not (where & (template > 0.01) & ~changed).any(), (pid, modality)


def test_fa_effect_only_in_fa(cohort: Path, tmp_path: Path) -> None:
    without = tmp_path / "without_fa_effect"
    make_cohort(_spec(effects=_effects(fa=False)), without, workers=1)
    table = pd.read_csv(cohort / "participants.tsv", sep="\t")
    for modality in ("gm", "wm"):
        np.testing.assert_array_equal(_stack(cohort, table, modality), _stack(without, table, modality))
    fa_with, fa_without = _stack(cohort, table, "fa"), _stack(without, table, "fa")
    sphere = _load(cohort, "ground_truth/fa_sphere.nii.gz").get_fdata() > 0
    patient = (table["label"] == "patient").to_numpy()
    assert (fa_without[patient][:, sphere] > fa_with[patient][:, sphere]).mean() > 0.9
    np.testing.assert_array_equal(fa_with[~patient], fa_without[~patient])


def test_interaction_has_equal_marginals(cohort: Path, clean: Path) -> None:
    for folder in (cohort, clean):
        table = pd.read_csv(folder / "participants.tsv", sep="\t")
        info = json.loads((folder / "cohort.json").read_text())
        xor = next(e for e in info["effects"] if e["kind"] == "interaction")
        a = table["participant_id"].isin(xor["parts"][0]["planted"]).to_numpy()
        b = table["participant_id"].isin(xor["parts"][1]["planted"]).to_numpy()
        patient = (table["label"] == "patient").to_numpy()
        np.testing.assert_array_equal(patient, a ^ b)
        for part in (a, b):
            assert part[patient].sum() == part[~patient].sum() == patient.sum() // 2
    # noise-free: each region's mean is the same in both classes; only the pair separates them
    table = pd.read_csv(clean / "participants.tsv", sep="\t")
    gm = _stack(clean, table, "gm")
    patient = (table["label"] == "patient").to_numpy()
    feats = np.stack(
        [gm[:, _load(clean, f"ground_truth/xor_{k}.nii.gz").get_fdata() > 0].mean(1) for k in "ab"],
        axis=1,
    )
    np.testing.assert_allclose(feats[patient].mean(0), feats[~patient].mean(0), rtol=1e-3)
    low = feats < feats.max(0) - 1e-3  # reduced region
    np.testing.assert_array_equal(low[:, 0] ^ low[:, 1], patient)
    sklearn = pytest.importorskip("sklearn.linear_model")
    linear = sklearn.LogisticRegression().fit(feats, patient)
    assert linear.score(feats, patient) <= 0.75


def test_age_scales_grey_matter(cohort: Path) -> None:
    table = pd.read_csv(cohort / "participants.tsv", sep="\t")
    subjects = json.loads((cohort / "cohort.json").read_text())["subjects"]
    ratio = np.array([s["gm_scale"] / s["global_scale"] for s in subjects])
    np.testing.assert_allclose(ratio, 1 - 0.02 * (table["age"].to_numpy() - 50) / 10, atol=1e-4)


def test_spec_validation_and_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not generated"):
        SynthSpec(modalities=("gm",), effects=[Effect(kind="sphere", center_mm=(0, 0, 0), modality="fa")])
    with pytest.raises(ValidationError, match="needs regions"):
        Effect(kind="atlas")
    with pytest.raises(ValidationError, match="exactly two"):
        Effect(kind="interaction", parts=[Effect(kind="sphere", center_mm=(0, 0, 0))])
    out = tmp_path / "bad"
    bad = _spec(n_subjects=4, effects=[Effect(kind="atlas", regions=["Hipocampus_L"])])
    with pytest.raises(NeuroCNNError, match="Hippocampus_L"):
        make_cohort(bad, out)
    assert not out.exists()  # nothing written for a spec that cannot be built
    far = _spec(n_subjects=4, effects=[Effect(kind="sphere", center_mm=(500, 0, 0))])
    with pytest.raises(NeuroCNNError, match="covers no voxel"):
        make_cohort(far, out)
    (out / "keep.txt").parent.mkdir()
    (out / "keep.txt").write_text("user file")
    small = _spec(n_subjects=4, modalities=("gm",), effects=[])
    with pytest.raises(NeuroCNNError, match="not empty"):
        make_cohort(small, out)
    make_cohort(small, out, overwrite=True)
    assert (out / "keep.txt").read_text() == "user file"
    assert sorted(p.name for p in out.iterdir()) == [
        "brain_mask.nii.gz",
        "cohort.json",
        "gm",
        "ground_truth",
        "keep.txt",
        "participants.tsv",
    ]
    # a folder of the user's own with a gm/ folder of real scans is never cleared
    mine = tmp_path / "study"
    (mine / "gm").mkdir(parents=True)
    (mine / "gm" / "sub-01_gm.nii.gz").write_bytes(b"real scan")
    with pytest.raises(NeuroCNNError, match="holds gm but is not a cohort made by neurocnn synth"):
        make_cohort(small, mine, overwrite=True)
    assert (mine / "gm" / "sub-01_gm.nii.gz").read_bytes() == b"real scan"


def test_default_spec() -> None:
    spec = default_spec()
    assert spec.n_subjects == 200 and spec.voxel_size == 3.0
    assert spec.modalities == ("gm", "wm", "fa")
    gm, fa = spec.effects
    assert gm.kind == "atlas" and gm.atlas == "aal2" and len(gm.regions) == 3
    assert fa.modality == "fa"
    with_xor = default_spec(40, 6.0, interaction=True, modalities=("gm",))
    assert [e.kind for e in with_xor.effects] == ["atlas", "interaction"]
    assert SynthSpec.model_validate(with_xor.model_dump(mode="json")) == with_xor


def _cli(tmp_path: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="neurocnn")
    synth_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["synth", *argv])
    return args.func(args)


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["--subjects", "6", "--voxel-size", "8", "--modalities", "gm,fa", "--seed", "1"]
    argv += ["--atlas-effect", "aal2:Temporal_Mid_L+8201:gm:0.2"]
    argv += ["--sphere-effect=-28,-10,30,12:fa:0.15", "--no-compress"]
    assert _cli(tmp_path, str(out), *argv) == 0
    printed = capsys.readouterr().out
    assert "participants.tsv" in printed and "observed d" in printed
    table = pd.read_csv(out / "participants.tsv", sep="\t")
    assert list(table.columns)[-2:] == ["gm", "fa"] and table["gm"][0].endswith(".nii")
    info = json.loads((out / "cohort.json").read_text())
    first = info["effects"][0]
    # a name and its label value name the same region once resolved
    assert [r["name"] for r in first["regions"]] == ["Temporal_Mid_L", "Temporal_Mid_L"]
    assert info["effects"][1]["modality"] == "fa" and info["effects"][1]["size"] == 0.15

    assert _cli(tmp_path, "--print-spec", "--subjects", "10", "--interaction") == 0
    spec = SynthSpec.model_validate(yaml.safe_load(capsys.readouterr().out))
    assert spec.n_subjects == 10 and spec.effects[-1].kind == "interaction"
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    args = ["--spec", str(spec_file), "--print-spec", "--seed", "9"]
    assert _cli(tmp_path, *args) == 0
    assert SynthSpec.model_validate(yaml.safe_load(capsys.readouterr().out)).seed == 9
    with pytest.raises(NeuroCNNError, match="gm, wm, fa"):
        _cli(tmp_path, str(tmp_path / "x"), "--modalities", "t1")
    with pytest.raises(NeuroCNNError, match="X,Y,Z,RADIUS"):
        _cli(tmp_path, str(tmp_path / "x"), "--sphere-effect", "1,2:gm")
    with pytest.raises(NeuroCNNError, match="not generated"):
        _cli(tmp_path, str(tmp_path / "x"), "--modalities", "gm", "--sphere-effect=0,0,0,9:fa")


def test_effect_in_a_user_label_map(tmp_path: Path) -> None:
    # a user's label map on its own (2 mm) grid, with a label table: a box of label 5 in white matter
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-90, -126, -72]
    labels = np.zeros((91, 109, 91), dtype=np.uint8)
    labels[25:35, 50:60, 45:55] = 5  # x -40..-22, y -26..-8, z 18..36 mm
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "wm_box.nii.gz")
    (tmp_path / "wm_box.csv").write_text("index,name\n5,Box\n")
    effect = Effect(
        kind="atlas",
        name="box",
        atlas=str(tmp_path / "wm_box.nii.gz"),
        atlas_labels=str(tmp_path / "wm_box.csv"),
        regions=["Box"],
        modality="fa",
    )
    out = tmp_path / "cohort"
    make_cohort(_spec(n_subjects=4, effects=[effect]), out, workers=1)
    truth = _load(out, "ground_truth/box.nii.gz")
    _, grid = mni_grid(VOXEL)
    ijk = np.argwhere(truth.get_fdata() > 0)
    xyz = nib.affines.apply_affine(grid, ijk)
    assert xyz.min(0)[0] >= -41 and xyz.max(0)[0] <= -21 and len(ijk) > 0
    info = json.loads((out / "cohort.json").read_text())
    assert info["effects"][0]["regions"] == [{"label": 5, "name": "Box", "n_voxels": len(ijk)}]
