"""The HTML report of one or more runs (`neurocnn report`): one self-contained file."""

from neurocnn.report.build import build_report

__all__ = ["build_report"]
