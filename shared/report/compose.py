"""The report's blocks, section by section, from the rows (figures are saved on the way)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from . import figures
from .cells import baselines, cell_frame, chosen, point_frame
from .doc import Figure, Heading, Para
from .findings import findings_section
from .paper import paper_section
from .provenance import provenance_section
from .style import figure_style, save
from .tables import framework_pairs, headline_section, side_by_side_section


def figures_section(data: figures.Data, figures_dir: Path) -> list:
    blocks = [Heading("4. Figures"),
              Para("One colour per framework (PyTorch orange-red, Keras indigo) and one per technique in every "
                   "figure.")]
    for spec in figures.FIGURES:
        blocks.append(Heading(spec.title, 3))
        try:
            with figure_style():
                fig = spec.build(data)
                if fig is not None:
                    save(fig, figures_dir, spec.name)
        except Exception as exc:  # one odd row must not cost the whole report; the failure is shown in its place
            blocks.append(Para(f"Figure `{spec.name}` could not be drawn: {type(exc).__name__}: {exc}"))
            continue
        blocks.append(Figure(spec.name, spec.caption) if fig is not None else
                      Para(f"Skipped: no {spec.needs} in these results."))
    return blocks


def split_presets(rows: list[dict]) -> tuple[str, list[dict], list[dict]]:
    """The preset with the most successful rows, its rows, and the rest.

    One directory may hold several runs (read_rows searches recursively); averaging a smoke cell with a
    quick one would mix widths and data, so the tables and figures cover one preset and say what they left out.
    """
    counts = Counter(r.get("preset") for r in rows if r.get("status") == "ok") or Counter(r.get("preset") for r in rows)
    main = counts.most_common(1)[0][0]
    return main, [r for r in rows if r.get("preset") == main], [r for r in rows if r.get("preset") != main]


def build_blocks(all_rows: list[dict], figures_dir: Path, title: str):
    """The report's blocks and the cell table of every row (results.csv lists them all)."""
    preset, rows, others = split_presets(all_rows)
    cells = cell_frame(rows)
    points = point_frame(cells)
    base = baselines(points)
    picks = chosen(points, base)
    pairs = framework_pairs(points)
    status = Counter(r.get("status") for r in rows)
    intro = Para(f"Preset `{preset}`: {len(rows)} cells, {status.get('ok', 0)} ok, {status.get('failed', 0)} failed, "
                 f"{status.get('not_implemented', 0)} not implemented. Accuracies are test-set percentages unless "
                 f"marked val. Generated from the result rows only (`python -m shared report`).")
    left_out = Counter(str(r.get("preset")) for r in others)
    left_text = [f"preset `{p}`: {n} row{'s' * (n != 1)} in the same directory, not in the tables or figures (one "
                 f"preset per report; results.csv lists every row): report their own directory."
                 for p, n in sorted(left_out.items())]
    blocks = [Heading(title, 1), intro, *[Para(f"**Left out:** {t}") for t in left_text],
              *headline_section(picks, base, cells),
              *paper_section(points, picks, base),
              *side_by_side_section(pairs),
              *figures_section(figures.Data(cells, points, base), figures_dir),
              *findings_section(cells, points, picks, base, pairs, rows, left_text),
              *provenance_section(rows)]
    return blocks, (cell_frame(all_rows) if others else cells)
