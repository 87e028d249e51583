"""A tiny document model, so REPORT.md and report.html are two renderings of the same blocks."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str  # may hold `code` and **bold**, the only inline markup both renderers understand


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    name: str  # file stem under figures/ (both .png and .svg exist)
    caption: str
    alt: str = field(default="")


def _cell(text) -> str:
    # a pipe would end the Markdown cell; a newline would end the row
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            if b.caption:
                out += [b.caption, ""]
            out.append("| " + " | ".join(_cell(c) for c in b.columns) + " |")
            out.append("|" + "---|" * len(b.columns))
            out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Figure):
            out += [f"![{b.alt or b.caption}](figures/{b.name}.png)", "", f"*{b.caption}* "
                    f"([SVG](figures/{b.name}.svg))", ""]
        else:
            raise TypeError(f"unknown block {type(b).__name__}")
    return "\n".join(out).rstrip() + "\n"
