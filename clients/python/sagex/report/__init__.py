"""Self-contained HTML reports of SAGE explanations, their evidence and their scores.

``collect`` gathers a ``Report`` through the SDK; ``render`` turns it into one
HTML file that opens without a server (inline CSS, a few lines of inline JS, no
fetches)."""

from sagex.report.collect import collect, latest_explanations
from sagex.report.model import FeatureReport, Report
from sagex.report.render import render, write

__all__ = ["FeatureReport", "Report", "collect", "latest_explanations", "render", "write"]
