"""`interpret_run` and `neurocnn interpret` on a tiny run folder with a planted effect."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from interpret_fixtures import SHAPE, one_thread, tiny_run  # noqa: F401  (fixtures)
from neurocnn.errors import NeuroCNNError
from neurocnn.interpret.markdown import ground_truth_checks, ground_truth_markdown, summary_lines
from neurocnn.interpret.perturbation import PerturbationConfig
from neurocnn.interpret.pipeline import InterpretOptions, interpret_run


def test_interpret_run_writes_maps_tables_and_checks(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, root = tiny_run
    options = InterpretOptions(
        methods=("gradcam", "guided_backprop", "perturbation"),
        atlases=(f"{root / 'atlas.nii.gz'}:{root / 'atlas.csv'}",),
        perturbation_subjects_per_fold=2,
        perturbation=PerturbationConfig(max_iter=8, jitters=3, sigma_image=2.0, sigma_mask=2.0),
        randomisation=True,
        randomisation_subjects=2,
        first_layer=True,
        voxel_stats=True,
        ground_truth=str(root / "cohort"),
    )
    summary = interpret_run(run, tmp_path, options, progress=False)
    assert summary["folds"] == ["r0_f0", "r0_f1"]
    assert summary["methods"]["gradcam"]["subjects"] == 24
    assert summary["methods"]["perturbation"]["subjects"] == 4
    img = nib.load(str(tmp_path / "subjects_gradcam.nii.gz"))
    assert img.shape == (*SHAPE, 24)
    np.testing.assert_allclose(img.affine, np.diag([3.0, 3.0, 3.0, 1.0]))
    rows = pd.read_csv(tmp_path / "subjects_gradcam.tsv", sep="\t")
    assert set(rows["fold"]) == {"r0_f0", "r0_f1"} and rows["index"].is_unique
    for name in ("control", "patient", "conjoined"):
        assert (tmp_path / "group" / f"gradcam_{name}.nii.gz").exists()
    regions = pd.read_csv(tmp_path / "regions" / "gradcam_atlas.tsv", sep="\t")
    assert set(regions["group"]) == {"control", "patient", "conjoined"}
    assert len(pd.read_csv(tmp_path / "agreement.tsv", sep="\t")) == 3
    masked = pd.read_csv(tmp_path / "masked_eval.tsv", sep="\t")
    assert set(masked["mask"]) >= {"none", "gradcam:conjoined", "perturbation:patient"}
    assert masked.loc[masked["mask"] == "none", "accuracy"].mean() > 0.8  # the tiny models learned
    rnd = pd.read_csv(tmp_path / "randomisation.tsv", sep="\t")
    assert set(rnd["method"]) == {"gradcam", "guided_backprop", "perturbation"}
    gt = pd.read_csv(tmp_path / "ground_truth.tsv", sep="\t")
    assert set(gt["region"]) == {"Corner"}
    gradcam = summary["methods"]["gradcam"]
    assert gradcam["planted_ranks"] == {"Corner": 1}  # the Grad-CAM group map finds the effect
    assert gradcam["localisation"][0]["enrichment"] > 1.0
    assert (tmp_path / "first_layer.png").exists() and (tmp_path / "ttest_gm_t.nii.gz").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["classes"] == ["control", "patient"]
    text = "\n".join(summary_lines(summary))
    assert "top regions" in text and "Dice" in text and "model randomisation" in text
    checks = ground_truth_checks(gradcam, ["Corner"])
    assert checks["in_top5"] == 1
    assert any("| gradcam |" in line for line in ground_truth_markdown(summary, ["Corner"]))

    # a second interpretation with one method: refused without overwrite; with it, nothing of the
    # first one (agreement, other methods' maps) is left to be read as if it were new
    fewer = options.model_copy(
        update={"methods": ("gradcam",), "randomisation": False, "first_layer": False, "voxel_stats": False}
    )
    with pytest.raises(NeuroCNNError, match="earlier interpretation; --overwrite"):
        interpret_run(run, tmp_path, fewer, progress=False)
    interpret_run(run, tmp_path, fewer, progress=False, overwrite=True)
    assert not (tmp_path / "agreement.tsv").exists() and not (tmp_path / "randomisation.tsv").exists()
    assert not list((tmp_path / "group").glob("guided_backprop_*"))
    assert (tmp_path / "group" / "gradcam_conjoined.nii.gz").exists()
    assert not tmp_path.with_name(tmp_path.name + ".partial").exists()
    mine = tmp_path.parent / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("years of work")
    with pytest.raises(NeuroCNNError, match="not an interpretation folder"):
        interpret_run(run, mine, fewer, progress=False, overwrite=True)
    assert (mine / "chapter1.tex").exists()


def parse(argv: list[str]) -> argparse.Namespace:
    from neurocnn.commands import interpret

    parser = argparse.ArgumentParser()
    interpret.register(parser.add_subparsers())
    return parser.parse_args(["interpret", *argv])


def test_cli_verb_on_a_run_and_with_a_checkpoint(
    tiny_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, root = tiny_run
    atlas = f"{root / 'atlas.nii.gz'}:{root / 'atlas.csv'}"
    args = parse(
        [
            str(run),
            "--methods",
            "gradcam,guided",
            "--atlas",
            atlas,
            "--folds",
            "0",
            "--out",
            str(tmp_path / "a"),
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "gradcam: 12 subjects" in out and "Corner" in out and "agreement gradcam vs guided_backprop" in out
    args = parse(
        [
            "--checkpoint", str(run / "folds" / "r0_f0" / "best.ckpt"),
            "--cache", str(root / "cache"),
            "--model", "mrinet",
            "--model-option", "widths=[4, 8]",
            "--methods", "gradcam",
            "--layer", "features.block1",
            "--atlas", atlas,
            "--out", str(tmp_path / "b"),
            "--no-masked-eval",
        ]
    )  # fmt: skip
    assert args.func(args) == 0
    assert nib.load(str(tmp_path / "b" / "subjects_gradcam.nii.gz")).shape[-1] == 24


def test_cli_verb_refuses_bad_requests(tiny_run: tuple[Path, Path]) -> None:
    run, _ = tiny_run
    args = parse([str(run), "--methods", "lime"])
    with pytest.raises(NeuroCNNError, match="unknown method 'lime'"):
        args.func(args)
    args = parse(["--checkpoint", "x.ckpt"])
    with pytest.raises(NeuroCNNError, match="needs --cache"):
        args.func(args)
    args = parse([str(run.parent / "nowhere")])
    with pytest.raises(NeuroCNNError, match="not a run folder"):
        args.func(args)


def test_cli_meaningful_perturbation_options_reach_the_config(tiny_run: tuple[Path, Path]) -> None:
    from neurocnn.commands.interpret import build_options

    run, _ = tiny_run
    options = build_options(parse([str(run), "--mp-sigma-mask", "3", "--mp-iterations", "40", "--mp-bf16"]))
    assert options.perturbation.sigma_mask == 3.0 and options.perturbation.max_iter == 40
    assert options.perturbation.precision == "bfloat16"
    assert build_options(parse([str(run)])).perturbation.sigma_mask == 10.0  # S3's default
    with pytest.raises(NeuroCNNError, match="Meaningful Perturbation options"):
        build_options(parse([str(run), "--mp-sigma-mask", "-1"]))


def test_subject_picking_is_balanced_and_rotates_over_folds() -> None:
    from neurocnn.interpret.runs import pick_subjects

    rows = np.arange(10)
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0, 1, 0])
    assert list(pick_subjects(rows, labels, 4)) == [0, 1, 3, 4]  # classes in turn
    assert list(pick_subjects(rows, labels, None)) == list(rows)
    # one subject per fold: the first class alternates with the fold's position
    firsts = [labels[pick_subjects(rows, labels, 1, start=fold)][0] for fold in range(4)]
    assert firsts == [0, 1, 0, 1]
