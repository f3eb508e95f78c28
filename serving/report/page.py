"""The report page as data (tables, figures, sections) and its rendering to one HTML document."""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass
class Table:
    """An HTML table: caption, column headers, rows of (row header, cells)."""

    caption: str
    columns: list[str]
    rows: list[tuple[str, list[str]]]
    numeric: list[bool] | None = None


@dataclass
class Figure:
    name: str  # file stem
    png: bytes
    alt: str
    caption: str

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    @property
    def size(self) -> tuple[int, int]:
        # PNG IHDR: width and height are big-endian uint32 at bytes 16-24.
        return int.from_bytes(self.png[16:20], "big"), int.from_bytes(self.png[20:24], "big")


@dataclass
class Decisions:
    """The decision makers' section, from today's scores: tiers, top customers, value ranges, drift."""

    intro: str
    tier_table: Table
    top_table: Table | None  # None in the copy logged to MLflow: it holds customer ids
    findings: list[str]
    notes: list[str]
    top_note: str = ""


@dataclass
class ReportPage:
    """Everything the template renders (sections in reading order)."""

    run_id: str
    title: str
    subtitle: str
    summary: list[str]
    drivers: list[str]
    caution: str
    importance_figures: list[Figure]
    importance_tables: list[Table]
    dependence_figures: list[Figure]
    dependence_notes: list[str]
    quadrant_text: str
    quadrant_figures: list[Figure]
    quadrant_tables: list[Table]
    quadrant_notes: list[str]
    decile_figures: list[Figure]
    decile_tables: list[Table]
    decile_notes: list[str]
    ablation_text: list[str]
    ablation_tables: list[Table]
    social_data: bool  # False: the sections about social data are left out
    card: list[tuple[str, str]]
    card_tables: list[Table]
    limitations: list[str]
    notes: list[str]
    decisions: Decisions | None = None  # with --scores only

    @property
    def figures(self) -> list[Figure]:
        return (self.importance_figures + self.dependence_figures + self.quadrant_figures + self.decile_figures)


def without_customer_ids(page: ReportPage) -> ReportPage:
    """The page without today's top-customers table (the only part naming current customers), for MLflow."""
    if page.decisions is None or page.decisions.top_table is None:
        return page
    note = ("The table of today's most valuable customers is left out of this copy: customer ids are never "
            "logged to MLflow. It is in the report written to the --out folder.")
    return replace(page, decisions=replace(page.decisions, top_table=None, top_note=note))


def render_html(page: ReportPage) -> str:
    """The page as one HTML document (inline CSS, figures as data URIs, no script)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    return env.get_template("report.html.j2").render(page=page)

