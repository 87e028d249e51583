"""Section 6: what produced the numbers, read from the rows' env, config and command."""
from __future__ import annotations

import json
from collections import Counter

from .cells import FRAMEWORK_NAMES, FRAMEWORKS
from .doc import Heading, Para, Table


def _distinct(values) -> str:
    seen = list(dict.fromkeys(str(v) for v in values if v not in (None, "", [])))
    return "; ".join(seen) if seen else "—"


def _commits(values, noun: str = "rows") -> str:
    """Every commit behind the figures with their count; a dirty tree is called out, not hidden in the hash."""
    counts = Counter(str(v) for v in values if v)
    if not counts:
        return "—"
    return "; ".join(f"{c.removesuffix('-dirty')[:12]}{' **(dirty tree)**' if c.endswith('-dirty') else ''} "
                     f"({n} {noun})" for c, n in counts.most_common())


def _timings(rows) -> list[dict]:
    return [t for r in rows for t in (r.get("timings") or {}).values()]


def _max_share(values) -> str:
    vals = [v for v in values if isinstance(v, (int, float))]
    return f"{max(vals):.1%}" if vals else "—"


def provenance_section(rows: list[dict]) -> list:
    fws = [f for f in FRAMEWORKS if any(r.get("framework") == f for r in rows)]
    fws += sorted({r.get("framework") for r in rows} - set(fws) - {None})
    by_fw = {f: [r for r in rows if r.get("framework") == f] for f in fws}
    env = {f: [r.get("env") or {} for r in rs] for f, rs in by_fw.items()}
    cfg = {f: [r.get("config") or {} for r in rs] for f, rs in by_fw.items()}
    fields = [
        ("Command", lambda f: _distinct(f"`{r.get('command')}`" for r in by_fw[f] if r.get("command"))),
        ("Preset", lambda f: _distinct(r.get("preset") for r in by_fw[f])),
        ("Seeds", lambda f: ", ".join(str(s) for s in sorted({r.get("seed") for r in by_fw[f]} - {None})) or "—"),
        ("Data / width / epochs", lambda f: _distinct(
            f"{c.get('data')} / {c.get('width')} / {(c.get('recipe') or {}).get('epochs')}" for c in cfg[f] if c)),
        ("Git commit (training)", lambda f: _commits(e.get("git_commit") for e in env[f])),
        ("Timing commit", lambda f: _commits((t.get("env", {}).get("git_commit") for t in _timings(by_fw[f])),
                                             "timings")),
        ("Timing threads", lambda f: _distinct(json.dumps(t.get("threads"), sort_keys=True) for t in _timings(by_fw[f]))),
        ("Others' CPU while timing (max)", lambda f: _max_share(t.get("others_cpu") for t in _timings(by_fw[f]))),
        ("Device", lambda f: _distinct(e.get("device") for e in env[f])),
        ("CPU", lambda f: _distinct(e.get("cpu") for e in env[f])),
        ("CPU flags", lambda f: _distinct(" ".join(e.get("cpu_flags") or []) for e in env[f])),
        ("Threads", lambda f: _distinct(e.get("threads") for e in env[f])),
        ("Platform", lambda f: _distinct(e.get("platform") for e in env[f])),
    ]
    packages = sorted({k for es in env.values() for e in es for k in (e.get("versions") or {})})
    fields += [(p, lambda f, p=p: _distinct((e.get("versions") or {}).get(p) for e in env[f])) for p in packages]
    table = Table(["", *[FRAMEWORK_NAMES.get(f, f) for f in fws]], [[name, *[get(f) for f in fws]]
                                                                    for name, get in fields])
    dirty = sum(str((r.get("env") or {}).get("git_commit", "")).endswith("-dirty") for r in rows)
    return [Heading("6. Provenance"),
            Para(f"{len(rows)} rows; {dirty} from a dirty tree (uncommitted changes){'' if not dirty else ': those numbers cannot be traced to a commit'}. "
                 "Values that differ between a framework's rows are all listed, separated by ';'."),
            table]
