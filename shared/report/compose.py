"""The report's blocks, section by section, from the rows (figures are saved on the way)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..config import from_jsonable
from ..presets import fingerprint
from . import figures
from .cells import baselines, cell_frame, chosen, point_frame
from .doc import Figure, Heading, Para
from .findings import findings_section
from .paper import paper_section
from .provenance import provenance_section
from .runtimes import runtimes_section
from .style import figure_style, save
from .tables import framework_pairs, headline_section, side_by_side_section
from .transfer import transfer_section


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


def row_fingerprint(row: dict) -> str:
    """The configuration fingerprint of a row (``presets.fingerprint``; rows older than it: from their config)."""
    if row.get("fingerprint"):
        return row["fingerprint"]
    try:
        return fingerprint(from_jsonable(row["config"]))
    except (KeyError, TypeError, ValueError):
        return "unknown"


def split_configs(rows: list[dict], wanted: str | None = None) -> tuple[str, list[dict], list[dict]]:
    """One configuration's rows (``wanted``, else the one with the most successful rows), and the rest.

    One directory may hold several runs (read_rows searches recursively); averaging a smoke cell with a
    quick one, or a quick cell with one from a changed quick preset, would mix widths, data or recipes, so the
    tables and figures cover one configuration fingerprint and say what they left out.
    """
    fps = [row_fingerprint(r) for r in rows]
    if wanted is not None:
        if wanted not in fps:
            raise ValueError(f"no rows with configuration fingerprint {wanted!r}; present: {', '.join(sorted(set(fps)))}")
        main = wanted
    else:
        counts = Counter(f for f, r in zip(fps, rows) if r.get("status") == "ok") or Counter(fps)
        main = counts.most_common(1)[0][0]
    return (main, [r for f, r in zip(fps, rows) if f == main], [r for f, r in zip(fps, rows) if f != main])


def is_synthetic(rows: list[dict]) -> bool:
    return (rows[0].get("config") or {}).get("data") == "synthetic"


def build_blocks(all_rows: list[dict], figures_dir: Path, titles: tuple[str, str], fingerprint: str | None = None,
                 corrupt=()):
    """The report's blocks, the cell table of every row (results.csv lists them all), and whether the rows
    are of synthetic data (then the title says so and no cross-framework verdict is given)."""
    fp, rows, others = split_configs(all_rows, fingerprint)
    preset = rows[0].get("preset")
    synthetic = is_synthetic(rows)
    title = titles[1] if synthetic else titles[0]
    cells = cell_frame(rows)
    points = point_frame(cells)
    base = baselines(points)
    picks = chosen(points, base)
    pairs = framework_pairs(points, verdicts=not synthetic)
    status = Counter(r.get("status") for r in rows)
    intro = Para(f"Preset `{preset}` (configuration `{fp}`): {len(rows)} cells, {status.get('ok', 0)} ok, "
                 f"{status.get('failed', 0)} failed, "
                 f"{status.get('not_implemented', 0)} not implemented. Accuracies are test-set percentages unless "
                 f"marked val. Generated from the result rows only (`python -m shared report`).")
    left_out = Counter((row_fingerprint(r), str(r.get("preset"))) for r in others)
    left_text = [f"configuration `{f}` (preset `{p}`): {n} row{'s' * (n != 1)} in the same directory, not in the "
                 f"tables or figures (one configuration per report; results.csv lists every row): report their own "
                 f"directory, or pass `--fingerprint {f}`." for (f, p), n in sorted(left_out.items())]
    left_text += [f"unreadable row file `{p}` (moved aside; the next run reruns its cell)." for p in corrupt]
    blocks = [Heading(title, 1), intro, *[Para(f"**Left out:** {t}") for t in left_text],
              *headline_section(picks, base, cells), *transfer_section(points, base), *runtimes_section(cells, picks),
              *paper_section(points, picks, base),
              *side_by_side_section(pairs),
              *figures_section(figures.Data(cells, points, base), figures_dir),
              *findings_section(cells, points, picks, base, pairs, rows, left_text),
              *provenance_section(rows)]
    if synthetic:
        blocks.insert(2, Para("**Synthetic data.** These rows come from generated images (a smoke test of the "
                              "pipeline): accuracies say nothing about CIFAR-10 and no cross-framework verdict is "
                              "given."))
    return blocks, (cell_frame(all_rows) if others else cells), synthetic
