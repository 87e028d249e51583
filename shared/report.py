"""The report: a pure function of the result rows under a directory (no training code imports this)."""
from __future__ import annotations

from pathlib import Path

from .results import read_rows

COLUMNS = (
    ("framework", "framework", "{}"),
    ("arch", "arch", "{}"),
    ("technique", "technique", "{}"),
    ("seed", "seed", "{}"),
    ("test_acc", "test acc %", "{:.2%}"),
    ("params_total", "params", "{:,}"),
    ("params_nonzero", "nonzero", "{:,}"),
    ("macs", "MACs (M)", "mega"),
    ("size_bytes", "size (MB)", "mb"),
    ("size_gzip_bytes", "gzip (MB)", "mb"),
    ("latency_b1_ms_median", "b1 ms (p50)", "{:.2f}"),
    ("latency_b64_ms_median", "b64 ms (p50)", "{:.1f}"),
    ("train_time_s", "train s", "{:.0f}"),
    ("train_images_per_s", "train img/s", "{:.0f}"),
)


def _fmt(value, spec: str) -> str:
    if value is None:
        return "—"
    if spec == "mega":
        return f"{value / 1e6:.1f}"
    if spec == "mb":
        return f"{value / 1e6:.2f}"
    return spec.format(value).replace("%", "") if spec.endswith("%}") else spec.format(value)


def markdown_table(rows: list[dict]) -> str:
    ok = sorted((r for r in rows if r.get("status") == "ok"),
                key=lambda r: (r["arch"], r["technique"], r["framework"], r["seed"]))
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(k), spec) for k, _, spec in COLUMNS) + " |" for r in ok]
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        lines += ["", "Failed cells (retried on the next run):"]
        lines += [f"- `{r['cell_id']}`: {(r.get('error') or '').strip().splitlines()[-1:]}" for r in failed]
    return "\n".join(lines)


def provenance_lines(rows: list[dict]) -> list[str]:
    seen, out = set(), []
    for r in rows:
        env = r.get("env") or {}
        key = (env.get("framework"), env.get("git_commit"))
        if key in seen or not env:
            continue
        seen.add(key)
        versions = ", ".join(f"{k} {v}" for k, v in sorted(env.get("versions", {}).items()))
        out.append(
            f"- {env.get('framework')}: commit `{env.get('git_commit')}`, {env.get('device')} / {env.get('cpu')} "
            f"({env.get('threads')} threads, flags {' '.join(env.get('cpu_flags', []))}); {versions}; "
            f"command `{r.get('command')}`, preset `{r.get('preset')}`"
        )
    return out


def write_report(out_dir) -> Path:
    out_dir = Path(out_dir)
    rows = read_rows(out_dir)
    if not rows:
        raise FileNotFoundError(f"no result rows under {out_dir}: run `python -m shared run --preset P --out {out_dir}` first")
    report_dir = out_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    text = "\n".join(["# Results", "", markdown_table(rows), "", "## Provenance", "", *provenance_lines(rows), ""])
    path = report_dir / "REPORT.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
