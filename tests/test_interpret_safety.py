"""`neurocnn interpret` never replaces what is not its own, explains only finished folds, checks its
options before the long computation, and writes file-safe names and strict JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from interpret_fixtures import one_thread, tiny_run  # noqa: F401  (fixtures)
from neurocnn.errors import NeuroCNNError
from neurocnn.interpret import pipeline
from neurocnn.interpret.pipeline import InterpretOptions, interpret_models, interpret_run
from neurocnn.interpret.runs import FoldModel, finished_folds
from training_fixtures import write_cache

FAST = InterpretOptions(methods=("gradcam",), atlases=(), masked_eval=False)


def copy_run(tiny_run: tuple[Path, Path], where: Path) -> Path:
    """A copy of the tiny run with the summary.json every real run folder has."""
    run = shutil.copytree(tiny_run[0], where)
    (run / "summary.json").write_text(json.dumps({"classes": ["control", "patient"], "per_fold": []}))
    return Path(run)


def contents(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_out_never_replaces_a_run_or_what_holds_it(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "runs" / "mrinet")
    other = copy_run(tiny_run, tmp_path / "runs" / "svm")
    before = contents(run), contents(other)
    for out, message in (
        (run, "is or contains"),  # the run itself
        (tmp_path / "runs", "is or contains"),  # a folder holding the run
        (other, "is a run folder"),  # another run
    ):
        with pytest.raises(NeuroCNNError, match=message):
            interpret_run(run, out, FAST, progress=False, overwrite=True)
    assert (contents(run), contents(other)) == before
    # a folder with a summary.json but no interpretation marker is not replaced either
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "summary.json").write_text("{}")
    with pytest.raises(NeuroCNNError, match="not an interpretation folder"):
        interpret_run(run, mine, FAST, progress=False, overwrite=True)
    assert contents(mine) == {"summary.json"}
    # nor a user's folder that happens to be named like the partial output
    (tmp_path / "maps.partial").mkdir()
    (tmp_path / "maps.partial" / "notes.txt").write_text("mine")
    with pytest.raises(NeuroCNNError, match="not left by `neurocnn interpret`"):
        interpret_run(run, tmp_path / "maps", FAST, progress=False)
    assert (tmp_path / "maps.partial" / "notes.txt").read_text() == "mine"
    # an interpretation is marked, and replaced with --overwrite
    interpret_run(run, tmp_path / "interp", FAST, progress=False)
    assert (tmp_path / "interp" / ".neurocnn-interpretation").is_file()
    interpret_run(run, tmp_path / "interp", FAST, progress=False, overwrite=True)


def test_only_finished_folds_are_explained_and_the_others_listed(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    fold1 = run / "folds" / "r0_f1"
    (fold1 / "metrics.json").unlink()  # best.ckpt is written from epoch 1 on: proves nothing
    (fold1 / "error.txt").write_text("Traceback ...")
    options = FAST.model_copy(update={"masked_eval": True})
    summary = interpret_run(run, tmp_path / "out", options, progress=False)
    assert summary["folds"] == ["r0_f0"]
    assert "failed" in summary["skipped_folds"]["r0_f1"]
    # the written summary is strict JSON (masked accuracy's SD over one fold is NaN: null)
    text = (tmp_path / "out" / "summary.json").read_text()
    written = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in summary.json"))
    assert written["kind"] == "neurocnn-interpretation"
    assert written["source"]["out_of_fold"] is True
    assert written["skipped_folds"] == summary["skipped_folds"]
    assert written["masked_eval"][0]["std"] is None
    (fold1 / "error.txt").unlink()  # still training
    assert list(finished_folds(run)[0]) == [0]
    assert "not finished" in finished_folds(run)[1]["r0_f1"]
    with pytest.raises(NeuroCNNError, match="no fold 7"):
        finished_folds(run, folds=(7,))


class Bare(nn.Module):
    """A conv net with a parameter no reset_parameters reaches (model randomisation refuses it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        self.act = nn.ReLU()
        self.scale = nn.Parameter(torch.ones(1))
        self.head = nn.Linear(2, 2)
        self.gradcam_layer = "conv"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)).mean(dim=(2, 3, 4)) * self.scale)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"atlases": ("missing.nii.gz:missing.csv",)}, "--atlas missing.nii.gz"),
        ({"atlases": ("no_such_atlas",)}, "--atlas no_such_atlas"),
        ({"ground_truth": "no_such_cohort"}, "not a synthetic cohort"),
        ({"layer": "no.such.layer"}, "no layer 'no.such.layer'"),
        ({"randomisation": True}, "cannot re-draw"),
        ({"first_layer": True, "classes": 3}, "compare two classes"),
        ({"voxel_stats": True, "classes": 3}, "compare two classes"),
    ],
)
def test_bad_options_fail_before_any_map_is_computed(tmp_path, monkeypatch, update, message):
    classes = ("a", "b", "c") if update.pop("classes", 2) == 3 else ("control", "patient")
    from neurocnn.data.cache import open_cache

    cache = open_cache(write_cache(tmp_path / "cache", 12, shape=(8, 8, 8), classes=classes))
    models = [FoldModel("r0_f0", Bare().eval(), np.arange(12))]

    def never(*args, **kwargs):
        raise AssertionError("maps were computed before the options were checked")

    monkeypatch.setattr(pipeline, "explain", never)
    with pytest.raises(NeuroCNNError, match=message):
        interpret_models(models, cache, tmp_path / "out", FAST.model_copy(update=update), progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_class_names_become_file_safe_and_distinct_from_the_conjoined_map(tmp_path):
    from neurocnn.interpret import outputs
    from neurocnn.report.collect import read_interpretation

    classes = ["AD/MCI", "conjoined", "Conjoined"]
    maps = torch.zeros(3, 4, 4, 4)
    for k in range(3):
        maps[k, k, 0, 0] = 1.0
    done = pipeline.Explained(
        {"gradcam": [maps]},
        {"gradcam": [{"index": k, "fold": "r0_f0", "label": c, "target": c} for k, c in enumerate(classes)]},
    )
    cache = SimpleNamespace(classes=classes, affine=np.eye(4))
    summary = {"methods": {}}
    groups = outputs.save_maps(done, cache, tmp_path, FAST, summary)
    files = sorted(p.name for p in (tmp_path / "group").iterdir())
    assert files == [f"gradcam_{k}.nii.gz" for k in ("AD_MCI", "Conjoined_2", "conjoined", "conjoined_1")]
    assert summary["groups"]["AD_MCI"] == "AD/MCI" and summary["groups"]["conjoined_1"] == "conjoined"
    assert groups["gradcam"]["conjoined"].sum() == 3.0  # the sum, not the class named 'conjoined'
    assert groups["gradcam"]["conjoined_1"][1, 0, 0] == 1.0
    summary.update(kind="neurocnn-interpretation")
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    interp = read_interpretation(tmp_path)
    assert interp is not None
    assert set(interp.group_maps) >= {"gradcam · AD/MCI", "gradcam · conjoined", "gradcam · Conjoined"}


def test_perturbation_group_maps_keep_the_absolute_scale_and_thresholds_keep_their_defaults(tmp_path):
    """Meaningful Perturbation's saliency (1 − mask) is absolute: a subject whose mask barely moved
    must not count as much as a confident one in the group map (the gradient methods' maps are
    scaled per subject). Thresholds given for one method leave the others at their defaults."""
    from neurocnn.interpret import outputs
    from neurocnn.interpret.agreement import DEFAULT_THRESHOLDS

    maps = torch.zeros(2, 4, 4, 4)
    maps[0, 0, 0, 0] = 1.0  # a confident mask: region A deleted
    maps[1, 3, 3, 3] = 3e-5  # an optimisation that barely moved, in region B
    rows = [{"index": k, "fold": "r0_f0", "label": "a", "target": "a"} for k in range(2)]
    done = pipeline.Explained(
        {"perturbation": [maps], "gradcam": [maps]}, {"perturbation": rows, "gradcam": rows}
    )
    cache = SimpleNamespace(classes=["a", "b"], affine=np.eye(4))
    options = FAST.model_copy(update={"methods": ("perturbation", "gradcam")})
    groups = outputs.save_maps(done, cache, tmp_path, options, {"methods": {}})
    mp, cam = groups["perturbation"]["a"], groups["gradcam"]["a"]
    assert mp[0, 0, 0] == pytest.approx(0.5) and mp[3, 3, 3] == pytest.approx(1.5e-5)
    assert cam[0, 0, 0] == pytest.approx(0.5) and cam[3, 3, 3] == pytest.approx(0.5)
    chosen = InterpretOptions(thresholds={"gradcam": 0.5}).thresholds
    assert chosen["gradcam"] == 0.5 and chosen["guided_backprop"] == DEFAULT_THRESHOLDS["guided_backprop"]
