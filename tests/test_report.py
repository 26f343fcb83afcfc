"""The HTML report: every section present, every image decodes, offline, never clobbers a file."""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
from pathlib import Path

import pytest

from neurocnn.baselines.runs import CVOptions, run_svm
from neurocnn.cli import main
from neurocnn.errors import NeuroCNNError
from neurocnn.interpret.pipeline import InterpretOptions, interpret_run
from neurocnn.report import build_report
from neurocnn.report.build import SECTIONS
from neurocnn.report.check import check_in_browser, check_static, find_chromium
from neurocnn.training import parse_config, run_cv
from training_fixtures import tiny_config, write_cache


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    root = tmp_path_factory.mktemp("report")
    cache = write_cache(root / "cache", 24, effect=3.0)
    config = tiny_config(
        cache,
        splits={"folds": 3, "val_fraction": 0.2},
        train={"max_epochs": 2, "batch_size": 8, "early_stopping": None},
    )
    run_cv(parse_config(config), root / "cnn", progress=False)
    run_svm(
        cache,
        root / "svm",
        CVOptions(splits=root / "cnn", inner_folds=2, progress=False, save_models=False, n_boot=200),
    )
    options = InterpretOptions(
        methods=("gradcam", "guided_backprop"),
        atlases=(),
        masked_eval=True,
        randomisation=True,
        randomisation_subjects=2,
    )
    interpret_run(root / "cnn", root / "cnn" / "interpret", options, progress=False)
    return root / "cnn", root / "svm"


def test_report_has_every_section_and_decodable_images(runs, tmp_path):
    out = build_report(list(runs), tmp_path / "report.html")
    text = out.read_text()
    assert check_static(text) == []
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) >= 5  # ROC, learning, confusion, group maps, Dice
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "p_ttest" in text and "Nadeau" in text and "svm" in text


def test_static_check_catches_a_broken_image_and_a_missing_section(runs, tmp_path):
    text = build_report([runs[0]], tmp_path / "r.html").read_text()
    broken = re.sub(r'(src="data:image/png;base64,)([^"]{40})', r"\1AAAA", text, count=1)
    assert any("does not decode" in p for p in check_static(broken))
    gone = text.replace('<section id="roc">', '<section id="elsewhere">')
    assert "section 'roc' missing" in check_static(gone)


def test_report_refuses_to_overwrite_a_foreign_file(runs, tmp_path):
    foreign = tmp_path / "notes.html"
    foreign.write_text("<html>my notes</html>")
    with pytest.raises(NeuroCNNError, match="not a neurocnn report"):
        build_report([runs[0]], foreign)
    assert foreign.read_text() == "<html>my notes</html>"


def test_report_verb(runs, tmp_path, capsys):
    assert main(["report", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "x.html")]) == 0
    assert "report:" in capsys.readouterr().out


@pytest.mark.skipif(
    find_chromium() is None and not os.environ.get("CI"),
    reason="chromium not installed (.ci/run installs it)",
)
def test_report_renders_in_headless_chromium(runs, tmp_path):
    report = build_report(list(runs), tmp_path / "report.html")
    shot = tmp_path / "report.png"
    assert check_in_browser(report, shot) == []
    assert shot.stat().st_size > 10_000


def test_runs_of_one_model_get_distinct_rows(runs, tmp_path):
    from neurocnn.report.build import _metrics_table
    from neurocnn.report.collect import read_run

    cnn, _ = runs
    twin = tmp_path / "other" / cnn.name
    shutil.copytree(cnn, twin)
    loaded = [read_run(cnn), read_run(twin)]
    assert loaded[0].model == loaded[1].model == "mrinet"
    out = build_report([cnn, twin], tmp_path / "twins.html")
    metrics = re.search(r"id=.metrics.*?</table>", out.read_text(), re.S)
    assert metrics is not None
    assert f">other/{cnn.name}<" in metrics.group(0)
    assert f">{cnn.parent.name}/{cnn.name}<" in metrics.group(0)
    assert list(_metrics_table(loaded)["model"]) == ["mrinet", "mrinet"]


def test_brain_map_of_an_all_zero_map_still_renders(tmp_path):
    import nibabel as nib
    import numpy as np

    from neurocnn.report import figures

    path = tmp_path / "zero.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 7, 5), np.float32), np.eye(4)), path)
    png = figures.brain_map(path, np.random.default_rng(0).random((6, 7, 5)), "perturbation_M")
    assert png.startswith(b"\x89PNG")


def test_randomisation_table_counts_constant_maps_as_zero_like_the_summary(tmp_path):
    import numpy as np
    import pandas as pd

    from neurocnn.report.build import _sanity
    from neurocnn.report.collect import Interpretation

    rnd = pd.DataFrame(
        {
            "method": ["gradcam"] * 4,
            "randomised": ["all"] * 4,
            "subject": [0, 1, 2, 3],
            "spearman": [0.9, np.nan, np.nan, 0.8],  # two randomised maps all zero after the ReLU
        }
    )
    html = _sanity(Interpretation(tmp_path, {}, {"randomisation": rnd}, {}, {}))
    row = re.search(r"<tr>\s*<td>gradcam</td>(.*?)</tr>", html, re.S)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    # median of 0.9, 0, 0, 0.8 is 0.4 (without the constant maps: 0.85); 4 subjects, 2 constant
    assert cells == ["all", "0.400", "0.900", "4", "2"]


def edit_json(path: Path, **changes) -> None:
    import json

    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_single_fold_run_with_failed_and_missing_folds(runs, tmp_path):
    """A fold SD and CIs saved as null print as '–'; failed/missing folds are listed; learning
    curves only of the folds the summary counts."""
    import json

    from neurocnn.report.collect import read_run

    run = Path(shutil.copytree(runs[0], tmp_path / "one"))
    summary = json.loads((run / "summary.json").read_text())
    ms = {m: {"mean": v["mean"], "std": None} for m, v in summary["mean_std"].items()}
    pooled = {m: {"value": v["value"], "ci95": [None, None]} for m, v in summary["pooled"].items()}
    pooled["auc"]["value"] = None
    edit_json(
        run / "summary.json",
        mean_std=ms,
        pooled=pooled,
        per_fold=summary["per_fold"][:1],
        folds_done=1,
        folds_expected=3,
        missing=["r0_f1", "r0_f2"],
        failed=["r0_f2"],
    )
    text = build_report([run], tmp_path / "one.html").read_text()
    assert "– [–, –]" in text and "± –" in text
    assert "1/3" in text and "r0_f2" in text and "folds not finished: r0_f1" in text
    assert list(read_run(run).histories) == ["r0_f0"]


def test_run_without_pooled_test_predictions(runs, tmp_path):
    """An independent-scheme run has no RUN/predictions.csv: ROC and confusion say so."""
    run = Path(shutil.copytree(runs[0], tmp_path / "indep"))
    (run / "predictions.csv").unlink()
    text = build_report([run], tmp_path / "r.html").read_text()
    assert check_static(text) == []
    assert text.count("no pooled test predictions") == 2


def test_report_out_a_folder_and_a_users_tmp_file(runs, tmp_path):
    with pytest.raises(NeuroCNNError, match="is a folder"):
        build_report([runs[0]], tmp_path)
    mine = tmp_path / "report.tmp"
    mine.write_text("my notes")
    build_report([runs[0]], tmp_path / "report.html")
    assert mine.read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.tmp"]


def test_compared_run_with_other_classes_is_not_drawn(runs, tmp_path):
    import pandas as pd

    other = Path(shutil.copytree(runs[1], tmp_path / "other"))
    pred = pd.read_csv(other / "predictions.csv")
    rename = {"control": "healthy", "patient": "ill"}
    pred = pred.rename(columns={f"prob_{a}": f"prob_{b}" for a, b in rename.items()})
    pred[["label", "prediction"]] = pred[["label", "prediction"]].replace(rename)
    pred.to_csv(other / "predictions.csv", index=False)
    edit_json(other / "summary.json", classes=["healthy", "ill"])
    text = build_report([runs[0], other], tmp_path / "r.html").read_text()
    assert "other not drawn: its classes" in text


def test_interpretation_source_and_an_explicit_missing_folder(runs, tmp_path):
    with pytest.raises(NeuroCNNError, match="no interpretation there"):
        build_report([runs[0]], tmp_path / "r.html", interpretation=tmp_path / "nowhere")
    with pytest.raises(NeuroCNNError, match="not an interpretation folder"):
        build_report([runs[0]], tmp_path / "r.html", interpretation=runs[1])
    text = build_report([runs[0]], tmp_path / "r.html").read_text()
    assert "on its own test subjects (out-of-fold)" in text
    interp = Path(shutil.copytree(runs[0] / "interpret", tmp_path / "ckpt"))
    edit_json(
        interp / "summary.json",
        source={"kind": "checkpoint", "out_of_fold": False, "description": "one checkpoint on every subject"},
    )
    text = build_report([runs[0]], tmp_path / "r.html", interpretation=interp).read_text()
    assert "one checkpoint on every subject" in text and "possibly its training subjects" in text
