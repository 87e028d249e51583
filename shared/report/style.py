"""The figures' palettes (defined once, so a framework or technique has one colour in every figure) and
their saving (PNG + SVG, reproducible bytes)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, and no GUI toolkit import on a headless machine

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from ..techniques import TECHNIQUES  # noqa: E402

# PyTorch's brand orange-red and a dark indigo: far from each other and from tab20's mid-tone blue and red.
FRAMEWORK_COLORS = {"pytorch": "#EE4C2C", "keras": "#283593"}
FRAMEWORK_MARKERS = {"pytorch": "o", "keras": "s"}
FRAMEWORK_DASHES = {"pytorch": "", "keras": (4, 2)}
# tab20 holds 20 colours as 10 dark/light pairs: the first ten techniques (baseline, pruning, filters,
# sensitivity) take the ten dark ones, so the curves drawn together in one panel never share a hue; the
# rest take the light ones.
_TAB20 = sns.color_palette("tab20", 20).as_hex()
TECHNIQUE_COLORS = dict(zip(TECHNIQUES, _TAB20[0::2] + _TAB20[1::2]))
DPI = 110


@contextlib.contextmanager
def figure_style():
    """Seaborn's look for the report's figures only: the caller's global rcParams stay untouched."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85), plt.rc_context(
            {"svg.hashsalt": "report", "svg.fonttype": "none", "figure.dpi": DPI}):
        yield


def save(fig, figures_dir: Path, name: str) -> None:
    """PNG and SVG, without timestamps, so the same rows give the same files."""
    fig.savefig(figures_dir / f"{name}.png", dpi=DPI, metadata={"Software": None})
    fig.set_layout_engine("none")  # keep the layout the PNG computed: the SVG is identical and saves faster
    fig.savefig(figures_dir / f"{name}.svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
