"""The report: a pure function of the result rows under a directory (no training code imports this).

``write_report(DIR)`` writes DIR/report/: REPORT.md, a self-contained report.html, results.csv and every
figure as PNG and SVG under figures/. It is built in a temporary sibling directory and swapped in at the end,
so a crash never leaves half a report.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..results import corrupt_rows, duplicate_rows, read_rows
from ..timing import read_timings
from .latency import attach_timings
from .compose import build_blocks
from .doc import to_markdown
from .export import write_results_csv
from .html import to_html

__all__ = ["write_report"]
TITLE = "CNN compression: PyTorch vs Keras on CIFAR-10"
SYNTHETIC_TITLE = "CNN compression: PyTorch vs Keras — smoke test on synthetic data (not CIFAR-10)"


def write_report(out_dir, fingerprint: str | None = None) -> Path:
    """Write DIR/report/ from the rows (and the timing pass's timings) under DIR; return REPORT.md's path.

    ``fingerprint``: which configuration to report when DIR holds several (default: the one with most rows).
    """
    out_dir = Path(out_dir)
    duplicates = duplicate_rows(out_dir)
    if duplicates:
        cid, paths = next(iter(duplicates.items()))
        raise ValueError(
            f"{len(duplicates)} cells have more than one row under {out_dir}, e.g. {cid} at "
            f"{', '.join(str(p) for p in paths)}: two copies of one run would count one seed twice. Report one "
            f"copy (its own directory), or remove the duplicate.")
    rows = read_rows(out_dir)
    if not rows:
        raise FileNotFoundError(
            f"no result rows under {out_dir}: run `python -m shared run --preset P --out {out_dir}` first")
    rows = attach_timings(rows, read_timings(out_dir))
    corrupt = corrupt_rows(out_dir)
    final = out_dir / "report"
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    tmp.chmod(0o755)  # mkdtemp makes it private; the report is meant to be read by anyone
    try:
        _build(rows, tmp, fingerprint, corrupt)
        _swap(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left when building failed
    return final / "REPORT.md"


def _build(rows: list[dict], into: Path, fingerprint: str | None, corrupt=()) -> None:
    figures_dir = into / "figures"
    figures_dir.mkdir()
    blocks, cells, synthetic = build_blocks(rows, figures_dir, (TITLE, SYNTHETIC_TITLE), fingerprint, corrupt)
    (into / "REPORT.md").write_text(to_markdown(blocks))
    (into / "report.html").write_text(to_html(blocks, figures_dir, SYNTHETIC_TITLE if synthetic else TITLE))
    write_results_csv(cells, into / "results.csv")


def _swap(new: Path, final: Path) -> None:
    """Move the finished report into place; the old one is removed only after the new one is there."""
    old = None
    if final.exists():
        old = final.with_name(f".report-old-{new.name}")
        final.rename(old)
    new.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
