"""report.html: one self-contained file (figures as data URIs, inline CSS, no scripts, nothing to fetch)."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from .doc import Bullets, Figure, Heading, Para, Table

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;
color:#222}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f0f0f0;white-space:normal;text-align:left}
td.t{text-align:left;white-space:normal;overflow-wrap:anywhere;min-width:6em}
tbody tr:nth-child(even){background:#fafafa}
figure{margin:1em 0 2em}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-style:italic;color:#555}code{background:#f3f3f3;padding:0 3px}
nav ul{columns:2}.table-wrap{overflow-x:auto}
"""


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


NUMBER = re.compile(r"^[-+]?[\d.,]+(E[-+]\d+)?(%|×)?( ± [\d.]+ \(n=\d+\))?$|^—$|^±[\d.]+$")


def _td(text: str) -> str:
    # numbers right-aligned so digits line up; text left-aligned and allowed to wrap (long settings)
    return f"<td>{_inline(text)}</td>" if NUMBER.match(text) else f'<td class="t">{_inline(text)}</td>'


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_html(blocks, figures_dir: Path, title: str) -> str:
    body, toc = [], []
    for b in blocks:
        if isinstance(b, Heading):
            slug = _slug(b.text)
            if b.level == 2:
                toc.append(f'<li><a href="#{slug}">{_inline(b.text)}</a></li>')
            body.append(f'<h{b.level} id="{slug}">{_inline(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            cap = f"<p>{_inline(b.caption)}</p>" if b.caption else ""
            head = "".join(f"<th>{_inline(str(c))}</th>" for c in b.columns)
            rows = "".join("<tr>" + "".join(_td(str(c)) for c in r) + "</tr>" for r in b.rows)
            body.append(f'{cap}<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
                        f"<tbody>{rows}</tbody></table></div>")
        elif isinstance(b, Figure):
            src = _png_uri(figures_dir / f"{b.name}.png")
            body.append(f'<figure id="fig-{b.name}"><img src="{src}" alt="{html.escape(b.alt or b.caption)}">'
                        f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
        else:
            raise TypeError(f"unknown block {type(b).__name__}")
    if toc:  # the contents go right under the title
        body.insert(1 if blocks and isinstance(blocks[0], Heading) else 0,
                    f"<nav><strong>Contents</strong><ul>{''.join(toc)}</ul></nav>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
