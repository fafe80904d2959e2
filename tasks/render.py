"""The one renderer the report, the sweep page and the promotion artifact share.

Tables of already formatted text to HTML and to Markdown (one escaping rule for each format), a
matplotlib figure to PNG bytes, the stylesheet of the HTML pages, and how numbers are shown.
What a page says stays with its step (tasks/report.py, tasks/sweep.py, tasks/promote.py); how
it is written down is here, so the same number or the same `|` looks the same everywhere.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------- numbers


def as_number(value: Any) -> float | None:
    """A finite float, or None for missing, non-numeric or NaN values (JSON has no NaN); a bool is not a number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def format_decimals(value: Any, digits: int) -> str:
    """A number with a fixed count of decimals, or 'n/a'."""
    number = as_number(value)
    return "n/a" if number is None else f"{number:.{digits}f}"


def format_metric(value: Any) -> str:
    """How a metric is shown: four decimals, or 'n/a'."""
    return format_decimals(value, 4)


def format_count(value: Any) -> str:
    """A count with thousands separators (two decimals if it is not whole), or 'n/a'."""
    number = as_number(value)
    if number is None:
        return "n/a"
    return f"{int(number):,}" if number == int(number) else f"{number:,.2f}"


def format_mean(value: Any) -> str:
    """A mean of counts: thousands separators and one decimal, or 'n/a'."""
    number = as_number(value)
    return "n/a" if number is None else f"{number:,.1f}"


def format_percent(value: Any) -> str:
    """A share (0.25) as a percentage with one decimal (25.0%), or 'n/a'."""
    number = as_number(value)
    return "n/a" if number is None else f"{100 * number:.1f}%"


def format_value(value: Any) -> str:
    """Any JSON value for a reader: numbers, ranges, lists or text ('–' for none, 'yes'/'no' for bools)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{key} {format_value(item)}" for key, item in value.items())
    return str(value)


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Link:
    """A table cell that links somewhere: a link in HTML, its text in Markdown."""

    text: str
    href: str

    def __str__(self) -> str:
        return self.text


@dataclass
class Table:
    """Rows of already formatted text, rendered once as HTML and once as Markdown."""

    headers: list[str]
    rows: list[list[Any]]  # str cells, or Link
    row_classes: list[str] = field(default_factory=list)  # a CSS class per row, HTML only
    # Columns whose cells are right-aligned as numbers (HTML only). None: every cell that reads as a number.
    number_columns: frozenset[int] | None = None
    css_class: str = ""  # the <table>'s class, for a table whose columns the stylesheet shapes (HTML only)

    def __bool__(self) -> bool:
        return bool(self.rows)


_NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+%?$")


def _html_cell(cell: Any, number: bool) -> str:
    if isinstance(cell, Link):
        content = html_link(cell.text, cell.href)
    else:
        content = html.escape(str(cell))
    return f'<td class="number">{content}</td>' if number else f"<td>{content}</td>"


def html_table(table: Table, *, one_row_per_line: bool = False) -> str:
    """The table as one <table>; text is escaped (quotes too), number cells get class="number"."""
    head = "".join(f"<th>{html.escape(header)}</th>" for header in table.headers)
    body = []
    for index, row in enumerate(table.rows):
        css = table.row_classes[index] if index < len(table.row_classes) else ""
        cells = "".join(
            _html_cell(cell, column in table.number_columns if table.number_columns is not None
                       else isinstance(cell, str) and bool(_NUMBER.match(cell)))
            for column, cell in enumerate(row)
        )
        body.append(f'<tr class="{css}">{cells}</tr>' if css else f"<tr>{cells}</tr>")
    separator = "\n" if one_row_per_line else ""
    rows = "".join(f"{separator}{line}" for line in body) + separator
    opening = f'<table class="{html.escape(table.css_class)}">' if table.css_class else "<table>"
    return f"{opening}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def markdown_escape(text: str) -> str:
    """Text from data in Markdown: it must not open HTML tags or break a table, so <, > and & become
    entities, a pipe is backslash-escaped (it still reads as a pipe) and a line break becomes a space."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    """The table in GitHub Markdown, every cell through markdown_escape."""
    lines = ["| " + " | ".join(markdown_escape(str(header)) for header in table.headers) + " |",
             "|" + "|".join("---" for _ in table.headers) + "|"]
    lines += ["| " + " | ".join(markdown_escape(str(cell)) for cell in row) + " |" for row in table.rows]
    return "\n".join(lines)


def markdown_fence(text: str, language: str = "") -> str:
    """A fenced code block that the text cannot close: the fence is longer than any run of backticks in it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


# --------------------------------------------------------------------------- HTML pages

STYLESHEET = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330; background: #fff;
       max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 3rem; line-height: 1.45; }
header { border-bottom: 2px solid #1f77b4; margin-bottom: 1.2rem; padding-bottom: 0.6rem; }
h1 { margin: 0 0 0.3rem; font-size: 1.7rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d5dd; padding-bottom: 0.2rem; font-size: 1.3rem; }
.subtitle { color: #475467; margin: 0.2rem 0; }
.badge { display: inline-block; padding: 0.1rem 0.6rem; border-radius: 0.8rem; font-size: 0.85rem; font-weight: 600; }
.badge.ok { background: #d1fadf; color: #05603a; } .badge.bad { background: #fee4e2; color: #912018; }
.badge.warn { background: #fef0c7; color: #93370d; } .badge.neutral { background: #eaecf0; color: #344054; }
.verdict { margin: 0.35rem 0; line-height: 1.9; }
/* A long verdict wraps as a line of text, still coloured, rather than as a box of its own under its label. */
.verdict .badge { display: inline; font-size: 0.92rem; -webkit-box-decoration-break: clone; box-decoration-break: clone; }
h3 { margin: 1.4rem 0 0.3rem; font-size: 1.08rem; }
details { margin: 0.6rem 0 1rem; } summary { cursor: pointer; color: #175cd3; font-weight: 600; }
table.mistakes td:last-child { min-width: 24rem; max-width: 44rem; font-size: 0.88rem; }
table { border-collapse: collapse; margin: 0.8rem 0 1.2rem; font-size: 0.92rem; }
th, td { border: 1px solid #d0d5dd; padding: 0.3rem 0.7rem; text-align: left; vertical-align: top; }
th { background: #f2f4f7; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.fail td { background: #fee4e2; } tr.warn td { background: #fef0c7; } tr.best td { background: #e0f2fe; font-weight: 600; }
tr.failed td { color: #a00; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eaecf0; }
figcaption { color: #475467; font-size: 0.88rem; }
pre { background: #f8f9fb; border: 1px solid #eaecf0; padding: 0.8rem; overflow-x: auto; font-size: 0.82rem; line-height: 1.3;
      font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
"""


def html_badge(text: str, tone: str) -> str:
    """A coloured label: tone ok (green), warn (amber), bad (red) or neutral (grey); the text is escaped."""
    return f'<span class="badge {html.escape(tone)}">{html.escape(text)}</span>'


def html_link(text: str, href: str) -> str:
    """An <a> element, its text and address escaped."""
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


def shorten(text: str, limit: int) -> str:
    """text cut to at most limit characters, at a space where one is near, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit * 0.8:  # a word cut in two reads worse than a line a little shorter
        cut = cut[:space]
    return cut.rstrip() + "…"


def png_data_uri(png: bytes) -> str:
    """PNG bytes as a data: URI, so a page embeds its figures and fetches nothing."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def html_figure(png: bytes, title: str) -> str:
    """A figure with its title as the image's alt text and as the caption."""
    title = html.escape(title)
    return f'<figure><img src="{png_data_uri(png)}" alt="{title}"><figcaption>{title}</figcaption></figure>'


# --------------------------------------------------------------------------- figures


def new_figure(width: float = 7.0, height: float = 3.6) -> Any:
    """A matplotlib Figure, imported here so that a flow whose report is cached never loads matplotlib.

    Figures are built with the object API (Figure + its Agg canvas), not pyplot: pyplot keeps
    global state that is not thread-safe, and Prefect runs tasks in a thread pool. A Figure that
    pyplot never registered is freed like any other object, so there is nothing left to close.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless workers: never try to open a display
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def figure_png(figure: Any) -> bytes:
    """The figure as PNG bytes; the figure is cleared."""
    buffer = io.BytesIO()
    # No 'Software' stamp: the bytes then depend only on the data (and matplotlib's drawing).
    figure.savefig(buffer, format="png", metadata={"Software": None})
    figure.clear()
    return buffer.getvalue()
