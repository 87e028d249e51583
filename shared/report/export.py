"""results.csv: one line per cell with typed columns (integers stay integers, missing values stay empty)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..measure import METRIC_COLUMNS

INTEGER_COLUMNS = ("seed", "params_total", "params_nonzero", "macs", "size_bytes", "size_gzip_bytes")
CSV_COLUMNS = ("cell_id", "framework", "arch", "technique", "settings", "controlled", "seed", "preset", "status",
               "error", *METRIC_COLUMNS, "wall_time_s")


def results_frame(cells: pd.DataFrame) -> pd.DataFrame:
    df = cells.copy()
    df["settings"] = [json.dumps(s, sort_keys=True) for s in df.settings]  # one JSON text column: any technique
    df["error"] = [((r.get("error") or "").strip().splitlines() or [""])[-1] for r in df.row]
    df["controlled"] = df.controlled.astype(bool)
    for col in INTEGER_COLUMNS:  # nullable ints: 14991946 in the file, not 14991946.0
        df[col] = pd.to_numeric(df[col], errors="coerce").round().astype("Int64")
    return df[list(CSV_COLUMNS)]


def write_results_csv(cells: pd.DataFrame, path: Path) -> None:
    results_frame(cells).to_csv(path, index=False)
