"""``python -m shared list`` and ``plan``: what the presets and techniques are, and what a run would do."""
from __future__ import annotations

from pathlib import Path

from .presets import PRESETS, Preset, fingerprint
from .results import finished
from .runner import cell_label, plan_cells, preset_points
from .techniques import TECHNIQUES

FRAMEWORKS = {"pytorch_impl": "pytorch", "tensorflow_impl": "keras"}


def list_text() -> str:
    lines = ["Presets:"]
    for p in PRESETS.values():
        lines.append(f"  {p.name:<6} data={p.data} width={p.width:g} epochs={p.recipe.epochs} "
                     f"batch={p.recipe.batch_size} lr={p.recipe.lr:g} seeds={list(p.seeds)} archs={list(p.archs)} "
                     f"fingerprint={fingerprint(p)}")
    lines.append("Techniques and their operating points (per preset; one cell per point, arch and seed):")
    for t in TECHNIQUES:
        lines.append(f"  {t}")
        for p in PRESETS.values():
            per_arch = {a: preset_points(t, a, p) for a in p.archs}
            shown = sorted({_points(v) for v in per_arch.values()})
            text = "; ".join(shown) if len(shown) == 1 else "; ".join(f"{a}: {_points(v)}" for a, v in per_arch.items())
            lines.append(f"    {p.name:<6} {text}")
    return "\n".join(lines)


def _points(points: list[dict]) -> str:
    if not points:
        return "(not applicable)"
    return " | ".join(", ".join(f"{k}={v}" for k, v in sorted(s.items())) or "—" for s in points)


def plan_text(preset: Preset, out: Path | None, suites=None, techniques=None, archs=None,
              calibrations: dict[str, dict] | None = None) -> str:
    """Every cell a run would execute, marked done where ``out`` already has it, and the counts; with
    ``calibrations`` ({suite: calibration}, ``shared.estimate``) the estimated time of each cell and in all."""
    from .estimate import estimate

    lines, total, todo, seconds = [], 0, 0, {}
    for suite in suites or FRAMEWORKS:
        cells = plan_cells(FRAMEWORKS[suite], preset, tuple(techniques or TECHNIQUES), archs)
        done = [out is not None and finished(out, c.id) for c in cells]
        cost = {}
        if calibrations and suite in calibrations:
            todo_ids = {c.id for c, d in zip(cells, done) if not d}
            # the baselines are dry-run too, so the checkpoints the planned cells load exist
            dry = plan_cells(FRAMEWORKS[suite], preset, ("baseline",), archs) if "baseline" not in (techniques or TECHNIQUES) else []
            cost = estimate(preset, calibrations[suite], dry + cells, lambda c: c.id in todo_ids)
            seconds[suite] = sum(cost.values())
        head = f"{suite}: {len(cells)} cells" + (f", {sum(done)} already finished in {out}" if out else "")
        lines.append(head + (f", about {_duration(seconds[suite])} to run" if suite in seconds else ""))
        lines += [f"  [{'done' if d else 'todo'}] {cell_label(c)}" + (f"  ~{_duration(cost[c.id])}" if c.id in cost else "")
                  for c, d in zip(cells, done)]
        total, todo = total + len(cells), todo + len(cells) - sum(done)
    lines.append(f"total: {total} cells, {todo} to run (preset {preset.name}, configuration {fingerprint(preset)})")
    if seconds:
        lines.append(f"estimated wall time on this machine: {_duration(sum(seconds.values()))} of training, "
                     f"evaluation, conversion and artifacts (the timing pass, data loading and process start-up "
                     f"are not included; the estimate assumes nothing else runs)")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
