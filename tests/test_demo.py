"""`neurocnn demo --quick` runs end to end, reuses its work, and refuses a foreign folder."""

from __future__ import annotations

from neurocnn.cli import main
from neurocnn.data.cache import open_cache
from neurocnn.report.check import check_static


def test_demo_quick_runs_every_stage_and_reuses(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--subjects", "24", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "CNNs (balanced accuracy, 95% CI): MriNet" in text and "voxel SVM" in text
    assert open_cache(out / "cache").modalities == ["gm", "wm", "fa"]
    for run in ("mrinet", "s1_multimodal", "svm"):
        assert (out / "runs" / run / "summary.json").exists()
    assert (out / "runs" / "mrinet" / "interpret" / "ground_truth.tsv").exists()
    assert check_static((out / "report.html").read_text()) == []
    assert main(["demo", "--quick", "--subjects", "24", "--out", str(out)]) == 0
    assert "finished earlier (reused)" in capsys.readouterr().out


def test_demo_refuses_a_folder_that_is_not_a_demo(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("do not touch")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2
    assert "not a neurocnn demo folder" in capsys.readouterr().err
    assert (tmp_path / "thesis.tex").read_text() == "do not touch"
