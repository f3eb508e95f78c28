"""Building the stakeholder report: read a run, assemble the page, publish the folder whole, log it.

``build_report`` reads a training run (run_record), assembles the page's sections (sections, from
the pure content and the figures), renders one self-contained HTML page (page: every chart a PNG
data URI, no script, no network) and writes ``report.html`` with the charts as PNG files into a
temporary folder beside ``out_dir``, which then replaces ``out_dir`` whole (features.atomic): a
reader sees the previous report or the new one, never part of one, and a build that fails leaves
the previous report as it was. The same files are then logged to the run under ``report/``, except
that a report built with today's scores is logged without its top-customers table (customer ids
never go to MLflow).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from features import atomic
from serving.report.current_scores import load_current_scores
from serving.report.page import render_html, without_customer_ids
from serving.report.run_record import load_run
from serving.report.sections import assemble_page
from training import tracking

REPORT_ARTIFACT_DIR = "report"
REPORT_FILE = "report.html"


def build_report(*, model_uri: str | None = None, run_id: str | None = None, out_dir, scores=None,
                 currency: str | None = None) -> Path:
    """Write out_dir/report.html and the figures as PNG; log the same files to the run under ``report/``.

    ``model_uri`` defaults to models:/customer-value@champion (its version's training run is reported);
    pass ``run_id`` instead to report on any training run. ``out_dir`` is replaced whole by the new
    report, so it must be new, empty or hold only a previous report (report.html and PNG files).
    ``scores``: a scores file of ``clv score`` (its manifest beside it): the page then leads, after the
    summary, with today's tiers and top customers. The copy of the page logged to MLflow leaves the
    top customers out (no customer ids in MLflow). ``currency`` labels money (default: the scores'
    manifest's, else the training run's).
    """
    import mlflow

    out = Path(out_dir)
    target = out.resolve()  # "." and "..": publishing needs the folder's own name
    _check_replaceable(target)
    current = load_current_scores(scores) if scores is not None else None
    uri = tracking.tracking_uri()
    record = load_run(model_uri=model_uri, run_id=run_id, tracking_uri=uri)
    page = assemble_page(record, current, currency=currency)
    atomic.remove_stale(target)
    names = []
    with atomic.publishing(target, directory=True) as tmp:
        for figure in page.figures:
            name = f"{figure.name}.png"
            (tmp / name).write_bytes(figure.png)
            names.append(name)
        (tmp / REPORT_FILE).write_text(render_html(page), encoding="utf-8")
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name in names:
        client.log_artifact(record.run_id, str(target / name), artifact_path=REPORT_ARTIFACT_DIR)
    public = without_customer_ids(page)
    if public is page:
        client.log_artifact(record.run_id, str(target / REPORT_FILE), artifact_path=REPORT_ARTIFACT_DIR)
    else:
        with tempfile.TemporaryDirectory(prefix="clv-report-") as folder:
            path = Path(folder) / REPORT_FILE
            path.write_text(render_html(public), encoding="utf-8")
            client.log_artifact(record.run_id, str(path), artifact_path=REPORT_ARTIFACT_DIR)
    return out / REPORT_FILE


def _check_replaceable(folder: Path) -> None:
    """Refuse to publish over a folder holding anything but a previous report (it would be deleted)."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder for the report")
    other = sorted(p.name for p in folder.iterdir()
                   if not (p.is_file() and (p.name == REPORT_FILE or p.suffix == ".png")))
    if other:
        shown = ", ".join(other[:5]) + (", ..." if len(other) > 5 else "")
        raise ValueError(f"{folder} holds files that are not part of a report ({shown}); the report "
                         "replaces its folder whole, so choose a new or empty folder for it")
