"""The generated parts of the documentation, from the code: the key tables of docs/configuration.md.

The tables are built from the settings fields (:mod:`optiloss.settings`), where each key's default,
limits and help are declared, so the page cannot drift from what a TOML file and the options accept.
Regenerate after changing a setting (``tests/test_docs.py`` fails while the page is stale)::

    python -m optiloss.docs_gen          # rewrite docs/configuration.md in place
    python -m optiloss.docs_gen --check  # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import fields
from pathlib import Path

from optiloss.data import DATASETS
from optiloss.settings import (
    RunSettings,
    SearchConfig,
    TransferConfig,
    default_text,
    help_without_default,
    key_info,
)

CONFIGURATION_PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
_BLOCK = re.compile(r"(<!-- generated: (?P<name>[a-z-]+) -->\n).*?(<!-- end generated -->)", re.DOTALL)


def _allowed(owner: type, name: str) -> str:
    """What key ``name`` accepts, in words: its type and limits."""
    info = key_info(owner, name)
    limits = info.limits
    if name == "device":
        return "auto, cpu, cuda, cuda:N"
    if name == "dataset":
        return ", ".join(DATASETS) + " (see Data sets)"
    if name == "augmentation":
        return ", ".join(map(str, limits or ())) + " (all5: a study file only)"
    if info.kind is bool:
        return "true, false"
    if info.kind is dict:
        return 'table name = "formula"'
    if limits and isinstance(limits[0], str):
        words = ", ".join(map(str, limits))
        return f"list of {words}" if info.kind is tuple else words
    if limits is not None:
        low, high = limits
        number = "integers" if info.kind is tuple else ("integer" if info.kind is int else "number")
        if high is None:
            return f"{number} >= {low:g}"
        return f"{number} {low:g}-{high:g}"
    return {int: "integer", float: "number", str: "string", tuple: "list"}.get(info.kind, "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(owner: type, name: str, *defaults: str) -> str:
    info = key_info(owner, name)
    cells = [
        f"`{name}`",
        *(_cell(default) for default in defaults),
        _cell(_allowed(owner, name)),
        _cell(help_without_default(info.help)),  # the table has a default column
    ]
    return "| " + " | ".join(cells) + " |"


def shared_table() -> str:
    """The keys of every training run: study files and transfer files, each with its default."""
    lines = [
        "| key | default in a study | default in a transfer | allowed | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for item in fields(RunSettings):
        name = item.name
        lines.append(
            _row(RunSettings, name, default_text(SearchConfig, name), default_text(TransferConfig, name))
        )
    return "\n".join(lines)


def _own_table(owner: type) -> str:
    shared = {item.name for item in fields(RunSettings)}
    lines = ["| key | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for item in fields(owner):
        if item.name not in shared:
            lines.append(_row(owner, item.name, default_text(owner, item.name)))
    return "\n".join(lines)


BLOCKS = {
    "shared-keys": shared_table,
    "search-keys": lambda: _own_table(SearchConfig),
    "transfer-keys": lambda: _own_table(TransferConfig),
}
"""The generated blocks of docs/configuration.md, by the name in their ``<!-- generated: NAME -->`` marker."""


def render(page: str) -> str:
    """``page`` with every generated block rebuilt from the code (the text around them kept)."""

    def rebuild(match: re.Match[str]) -> str:
        return match.group(1) + BLOCKS[match.group("name")]() + "\n" + match.group(3)

    return _BLOCK.sub(rebuild, page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optiloss.docs_gen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale, write nothing")
    parser.add_argument(
        "--page", type=Path, default=CONFIGURATION_PAGE, help="default: docs/configuration.md"
    )
    args = parser.parse_args(argv)
    before = args.page.read_text()
    after = render(before)
    if args.check:
        if after != before:
            print(f"{args.page} is stale: run python -m optiloss.docs_gen", file=sys.stderr)
            return 1
        return 0
    if after != before:
        args.page.write_text(after)
        print(f"rewrote {args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
