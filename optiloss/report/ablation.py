"""An ablation's report (``optiloss ablate``): the table as CSV and Markdown, and a figure."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from optiloss.ablate import FULL, Ablation
from optiloss.report.dashboard import pyplot
from optiloss.report.tables import format_rows


def _file_stem(title: str) -> str:
    return "ablation-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", title).strip("-")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|")


def ablation_markdown(ablation: Ablation) -> str:
    """The ablation as Markdown: its settings and data conditions, the table (accuracy and robustness as
    mean ± sd over the seeds), the verdicts; rows the screen rejected are listed after the table."""
    rows = ablation.rows()
    config = ablation.config
    lines = [
        f"## Ablation of {ablation.title}",
        "",
        f"{config.dataset}, {config.augmentation}, {config.model}, {len(ablation.scores[FULL])} fresh seeds, "
        f"test split; data: {ablation.conditions()}.",
        "",
        "| variant | zoo name | formula | accuracy | robustness | difference (points) | Welch p | Holm p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["accuracy"] is None:
            continue
        accuracy = f"{row['accuracy']:.4f} ± {row['accuracy_sd']:.4f}"
        robustness = f"{row['robustness']:.4f} ± {row['robustness_sd']:.4f}"
        cells = [
            row["variant"],
            row["named"],
            f"`{row['formula']}`",
            accuracy,
            robustness,
            row.get("difference_points"),
            row["p_welch"],
            row["p_holm"],
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    lines += ["", *(f"- {line}" for line in ablation.verdicts())]
    rejected = [row for row in rows if row["accuracy"] is None]
    if rejected:
        lines += ["", "Not trained (the screen rejects them):", ""]
        lines += [
            f"- {row['variant']}: `{row['formula']}`, {row['note'].split(': ', 1)[1]}" for row in rejected
        ]
    return "\n".join(lines) + "\n"


def ablation_figure(ablation: Ablation, path: Path) -> Path:
    """Accuracy of each trained variant (mean ± sd over the seeds) beside the full loss's, as a PNG."""
    plt = pyplot()
    rows = [row for row in ablation.rows() if row["accuracy"] is not None]
    labels = [
        row["variant"] + (f" = {row['named']}" if row["named"] and row["variant"] != row["named"] else "")
        for row in rows
    ]
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    positions = list(range(len(rows)))[::-1]
    colours = ["#1f77b4" if row["variant"] == FULL else "#999999" for row in rows]
    axis.barh(
        positions, [row["accuracy"] for row in rows], xerr=[row["accuracy_sd"] for row in rows], color=colours
    )
    axis.axvline(rows[0]["accuracy"], color="#1f77b4", linestyle="--", linewidth=1)
    axis.set_yticks(
        positions, [label if len(label) < 60 else label[:57] + "..." for label in labels], fontsize=8
    )
    axis.set_xlabel("test accuracy (mean ± sd over seeds)")
    axis.set_title(f"Ablation of {ablation.title}", fontsize=10)
    low = min(row["accuracy"] - row["accuracy_sd"] for row in rows)
    axis.set_xlim(
        max(0.0, low - 0.05), min(1.0, max(row["accuracy"] + row["accuracy_sd"] for row in rows) + 0.02)
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def save_ablation(ablation: Ablation, output: str | Path = "storage/reports") -> list[Path]:
    """Write the ablation's CSV, Markdown and PNG into ``output``; their paths."""
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    stem = _file_stem(ablation.title)
    csv_path = folder / f"{stem}.csv"
    csv_path.write_text(format_rows(ablation.rows(), "csv") + "\n")
    markdown_path = folder / f"{stem}.md"
    markdown_path.write_text(ablation_markdown(ablation))
    return [csv_path, markdown_path, ablation_figure(ablation, folder / f"{stem}.png")]
