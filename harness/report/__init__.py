"""Comparison reports: MLflow store -> pandas tables -> matplotlib figures -> reports/<experiment>/.

Reads only what MLflow holds (runs, params, tags, metric histories); never imports training code.
`python -m harness.report EXPERIMENT` writes report.md, report.html, PNG figures and
summary.csv (the copy of report.html it logs to MLflow inlines the figures); `python -m harness.report --gallery` plots the loss functions themselves.
"""


class ReportError(Exception):
    """A report that cannot be made (no such experiment, no runs): shown as one line, exit 2."""
