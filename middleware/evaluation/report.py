"""An evaluation's results as files: JSON (every record), a Markdown table and a PNG plot."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ragpress.exceptions import MissingDependencyError

if TYPE_CHECKING:
    from pathlib import Path

    from ragpress.middleware.evaluation.runner import ConditionSummary, EvalReport

__all__ = ["markdown_table", "plot_accuracy", "write_report"]

_HEADER = (
    "| condition | ratio | accuracy [95% CI] | EM | F1 | answer kept | prompt tokens "
    "| compress ms | reader ms | errors |\n"
    "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
)


def markdown_table(report: EvalReport) -> str:
    """One row per condition: references first, then each ratio's baselines and methods."""
    return "\n".join([_HEADER, *(_row(s) for s in report.summaries)])


def _row(s: ConditionSummary) -> str:
    low, high = s.accuracy_interval
    ratio = "" if s.ratio is None else f"{s.ratio:.2f}x"
    return (
        f"| {s.condition.label} | {ratio} | {s.accuracy:.3f} [{low:.3f}, {high:.3f}] "
        f"| {s.exact_match:.3f} | {s.f1:.3f} | {s.retention:.3f} | {s.prompt_tokens:.0f} "
        f"| {s.compress_ms:.1f} | {s.reader_ms:.0f} | {s.errors} |"
    )


def plot_accuracy(report: EvalReport, path: Path, *, title: str = "") -> None:
    """Accuracy against achieved ratio: a line per method, the references as horizontal lines.

    Raises:
        MissingDependencyError: matplotlib (extra ``eval``) is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", extra="eval") from exc
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = {"full": "-", "none": ":", "gold": "--"}
    methods: dict[str, list[tuple[float, float]]] = {}
    for s in report.summaries:
        if s.condition.ratio is None:
            axes.axhline(
                s.accuracy,
                linestyle=styles.get(s.condition.method, "-."),
                color="grey",
                label=f"{s.condition.method} ({s.accuracy:.2f})",
            )
        elif s.ratio is not None:
            methods.setdefault(s.condition.method, []).append((s.ratio, s.accuracy))
    for method, points in methods.items():
        points.sort()
        axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=method)
    axes.set_xlabel("achieved compression ratio (tokens before / after)")
    axes.set_ylabel("accuracy (answer in reply)")
    axes.set_title(title or f"{report.records} records, reader {report.reader.split(':')[1]}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_report(report: EvalReport, out_dir: Path, *, title: str = "", plot: bool = True) -> None:
    """Write ``results.json``, ``results.md`` and (when ``plot``) ``accuracy.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(
        json.dumps(report.as_dict(), ensure_ascii=False, indent=1, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    heading = f"# {title}\n\n" if title else ""
    (out_dir / "results.md").write_text(
        f"{heading}Reader: `{report.reader}`; {report.records} records.\n\n"
        f"{markdown_table(report)}\n",
        encoding="utf-8",
    )
    if plot:
        plot_accuracy(report, out_dir / "accuracy.png", title=title)
