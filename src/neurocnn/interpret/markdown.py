"""Plain-text and Markdown views of an ``interpret_run`` summary (for the CLI and benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ENRICHMENT_TARGET = 3.0
RANDOMISATION_TARGET = 0.3
TOP_K = 5


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"  # NaN != NaN


def _constant(info: dict[str, Any]) -> str:
    n = info.get("randomisation_constant_maps", 0)
    return f"; {n}/{info['randomisation_subjects']} constant (as 0)" if n else ""


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A short report: per method the top regions, then agreement, masked accuracy, sanity checks."""
    lines = [f"folds: {', '.join(summary.get('folds', []))}; {summary.get('seconds', 0):.0f} s"]
    for name, why in (summary.get("skipped_folds") or {}).items():
        lines.append(f"skipped {name}: {why}")
    for method, info in summary.get("methods", {}).items():
        lines.append(
            f"{method}: {info['subjects']} subjects, {info['seconds_per_subject']:.2f} s per subject"
        )
        for atlas, top in info.get("regions", {}).items():
            regions = ", ".join(f"{r['region']} ({r['score']:.3f})" for r in top)
            lines.append(f"  top regions ({atlas}, conjoined map): {regions}")
        if "planted_ranks" in info:
            ranks = ", ".join(f"{k} #{v}" for k, v in info["planted_ranks"].items())
            lines.append(f"  planted regions' ranks (S3 score): {ranks}")
        if "planted_ranks_mean" in info:
            ranks = ", ".join(f"{k} #{v}" for k, v in info["planted_ranks_mean"].items())
            lines.append(f"  planted regions' ranks (mean attribution): {ranks}")
        for row in info.get("localisation", []):
            if row["region"] == "all planted":
                lines.append(
                    f"  attribution mass in planted regions {row['mass_share']:.3f} vs volume share "
                    f"{row['volume_share']:.3f} (enrichment {row['enrichment']:.1f}×)"
                )
        if "randomisation_spearman_median" in info:
            lines.append(
                "  model randomisation: Spearman median "
                f"{_f(info['randomisation_spearman_median'])}, max {_f(info['randomisation_spearman_max'])}"
                f" ({info['randomisation_constant_maps']} of {info['randomisation_subjects']} randomised "
                "maps constant, counted as 0)"
            )
    for row in summary.get("agreement", []):
        lines.append(
            f"agreement {row['method_a']} vs {row['method_b']}: Dice {_f(row['dice'])} "
            f"(voxel agreement {_f(row['voxel_agreement'])}), Spearman {_f(row['spearman'])}"
        )
    for row in summary.get("masked_eval", []):
        lines.append(f"masked accuracy [{row['mask']}]: {_f(row['mean'])} ± {_f(row['std'])}")
    return lines


def ground_truth_checks(info: dict[str, Any], planted: Sequence[str]) -> dict[str, Any]:
    """The issue's three targets for one method: planted regions in the top 5, enrichment ≥ 3×,
    randomised-model maps with Spearman < 0.3."""

    def in_top(ranks: dict[str, int | None]) -> int:
        return sum(1 for r in planted if ranks.get(r) is not None and ranks[r] <= TOP_K)

    # ranked by mean attribution per region (no threshold); S3's thresholded score alongside
    by_mean = in_top(info.get("planted_ranks_mean", info.get("planted_ranks", {})))
    by_s3 = in_top(info.get("planted_ranks", {}))
    union = next((r for r in info.get("localisation", []) if r["region"] == "all planted"), None)
    enrichment = union["enrichment"] if union else float("nan")
    rho = info.get("randomisation_spearman_median", float("nan"))
    return {
        "in_top5": by_mean,
        "in_top5_s3": by_s3,
        "top5_ok": by_mean >= 2,
        "enrichment": enrichment,
        "enrichment_ok": enrichment >= ENRICHMENT_TARGET,
        "randomisation": rho,
        "randomisation_ok": rho < RANDOMISATION_TARGET,
    }


def ground_truth_markdown(summary: dict[str, Any], planted: Sequence[str]) -> list[str]:
    """Markdown tables of the ground-truth experiment (per method: targets, ranks, localisation)."""
    yes = {True: "yes", False: "**no**"}
    lines = [
        "## Targets per method (conjoined group map, AAL2)",
        "",
        "| method | subjects | s/subject | planted in top 5 (mean attribution) | in top 5 (S3 score) "
        "| enrichment (mass / volume share) | randomised-model Spearman (median, max) | all met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, info in summary.get("methods", {}).items():
        c = ground_truth_checks(info, planted)
        met = c["top5_ok"] and c["enrichment_ok"] and c["randomisation_ok"]
        lines.append(
            f"| {method} | {info['subjects']} | {info['seconds_per_subject']:.1f} "
            f"| {c['in_top5']}/{len(planted)} ({yes[c['top5_ok']]}) | {c['in_top5_s3']}/{len(planted)} "
            f"| {_f(c['enrichment'], 2)}× ({yes[c['enrichment_ok']]}) "
            f"| {_f(c['randomisation'], 2)}, {_f(info.get('randomisation_spearman_max'), 2)}"
            f"{_constant(info)} ({yes[c['randomisation_ok']]}) | {yes[met]} |"
        )
    lines += ["", "## Rank of each planted region in the AAL2 table, and its attribution mass", ""]
    lines += [
        "| method | region | rank (mean attribution) | rank (S3 score) | mass share | volume share "
        "| enrichment |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, info in summary.get("methods", {}).items():
        ranks, ranks_mean = info.get("planted_ranks", {}), info.get("planted_ranks_mean", {})
        for row in info.get("localisation", []):
            lines.append(
                f"| {method} | {row['region']} | {ranks_mean.get(row['region'], '')} "
                f"| {ranks.get(row['region'], '')} "
                f"| {_f(row['mass_share'])} | {_f(row['volume_share'])} | {_f(row['enrichment'], 2)} |"
            )
    lines += ["", "## Top 5 AAL2 regions of each conjoined group map", ""]
    for method, info in summary.get("methods", {}).items():
        for atlas, top in info.get("regions", {}).items():
            names = ", ".join(f"{r['region']} {r['score']:.3f}" for r in top)
            lines.append(f"- {method} ({atlas}): {names}")
    if summary.get("agreement"):
        lines += ["", "## Agreement between methods (conjoined maps, S3 thresholds)", ""]
        lines += ["| pair | Dice | voxel agreement (the seed's 'Dice') | Spearman |", "|---|---|---|---|"]
        for row in summary["agreement"]:
            lines.append(
                f"| {row['method_a']} / {row['method_b']} | {_f(row['dice'])} "
                f"| {_f(row['voxel_agreement'])} | {_f(row['spearman'])} |"
            )
    if summary.get("masked_eval"):
        lines += ["", "## Masked re-evaluation (accuracy, mean ± sd over folds)", ""]
        lines += ["| mask | accuracy |", "|---|---|"]
        for row in summary["masked_eval"]:
            lines.append(f"| {row['mask']} | {_f(row['mean'])} ± {_f(row['std'])} |")
    return lines
