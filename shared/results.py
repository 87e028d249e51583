"""Result rows: one JSON file per completed cell (framework, arch, technique, settings, seed).

Rows are written to a temp file and renamed into place, so a run killed at any moment leaves either the
whole row or none; the row's file name is its cell id, so a cell can never be recorded twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

ROWS_DIR = "rows"
CORRUPT_DIR = "corrupt"  # unreadable rows are moved here (rows/corrupt/), never deleted


class CorruptRowWarning(UserWarning):
    """A row file could not be parsed: it was moved aside and its cell counts as unfinished."""


def _load_or_quarantine(path: Path) -> dict | None:
    """The row at ``path``, or None after moving an unparsable (empty, truncated, garbage) file aside."""
    try:
        with open(path) as f:
            row = json.load(f)
        if not isinstance(row, dict) or "cell_id" not in row:
            raise ValueError("not a result row (no cell_id)")
        return row
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        target = path.parent / CORRUPT_DIR / path.name
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
        warnings.warn(f"unreadable row {path} ({type(exc).__name__}: {exc}): moved to {target}; its cell "
                      f"counts as unfinished and is rerun", CorruptRowWarning, stacklevel=3)
        return None


def corrupt_rows(out_dir) -> list[Path]:
    """Row files moved aside as unreadable (the report lists them under "Rows left out")."""
    return sorted(Path(out_dir).rglob(f"{ROWS_DIR}/{CORRUPT_DIR}/*.json"))


def cell_id(framework: str, arch: str, technique: str, settings: dict, seed: int, fingerprint: str) -> str:
    """``framework__arch__technique__<settings digest>__<preset fingerprint>__s<seed>``: one file per cell of
    one configuration (``presets.fingerprint``)."""
    if not fingerprint:
        raise ValueError("a cell id needs the preset's fingerprint (shared.presets.fingerprint)")
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return f"{framework}__{arch}__{technique}__{digest}__{fingerprint}__s{seed}"


def row_path(out_dir, cid: str) -> Path:
    return Path(out_dir) / ROWS_DIR / f"{cid}.json"


def write_row(out_dir, row: dict) -> Path:
    path = row_path(out_dir, row["cell_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(row, f, indent=1, sort_keys=True, allow_nan=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_rows(out_dir) -> list[dict]:
    """Every row under ``out_dir`` (searched recursively, so one directory may hold several runs)."""
    rows = []
    for path in sorted(Path(out_dir).rglob(f"{ROWS_DIR}/*.json")):
        if path.name.startswith(".") or path.parent.name == CORRUPT_DIR:
            continue  # an unfinished temp file from a killed run, or a row already moved aside
        row = _load_or_quarantine(path)
        if row is not None:
            rows.append(row)
    return rows


def duplicate_rows(out_dir) -> dict[str, list[Path]]:
    """Cell ids with more than one row file under ``out_dir`` (copies of one run in two subdirectories)."""
    seen: dict[str, list[Path]] = {}
    for path in sorted(Path(out_dir).rglob(f"{ROWS_DIR}/*.json")):
        if not path.name.startswith(".") and path.parent.name != CORRUPT_DIR:
            seen.setdefault(path.stem, []).append(path)
    return {cid: paths for cid, paths in seen.items() if len(paths) > 1}


def finished(out_dir, cid: str) -> bool:
    """A cell counts as done only when it succeeded: failed cells are retried on the next run."""
    path = row_path(out_dir, cid)
    if not path.exists():
        return False
    row = _load_or_quarantine(path)
    return row is not None and row.get("status") == "ok"
