"""The "Transfer learning" table: from scratch against the transferred network with either head, then the
transferred network compressed (the seed's Hymenoptera experiment, issue 13). Only for a transfer preset."""
from __future__ import annotations

import pandas as pd

from . import fmt
from .cells import ARCH_NAMES, FRAMEWORK_NAMES, FRAMEWORKS
from .doc import Heading, Para, Table
from .latency import PRIMARY_RUNTIME, RUNTIME_NAMES, speedup_cell

COLUMNS = ["Model", "Setting", "Val acc %", "Test acc %", "Δ vs scratch (pts)", "Params", "Size MB",
           "Latency b1 ms", "Latency b64 ms", "Speedup b1", "Speedup b64"]
COMPRESSED = ("int8_dynamic", "int8_static", "int8_qat", "filter_uniform", "filter_l1")
NAMES = {"int8_dynamic": "then int8 dynamic", "int8_static": "then int8 static", "int8_qat": "then int8 QAT",
         "filter_uniform": "then filter-pruned", "filter_l1": "then filter-pruned"}


def _protocol(points: pd.DataFrame) -> dict | None:
    for rows in points.get("rows", []):
        t = ((rows[0] if rows else {}).get("config") or {}).get("transfer")
        if t:
            return t
    return None


def _head_name(head: str | None) -> str:
    return {"linear": "linear head", "dropout": "custom head + dropout"}.get(head, str(head))


def _model_rows(sub: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    """(the model's name, its point) in the table's order: scratch, each head, then the compressed models."""
    out = []
    transfer = sub[sub.technique == "transfer"]
    scratch = transfer[[s.get("init") == "scratch" for s in transfer.settings]]
    out += [("from scratch (same network, same images, same epochs)", p) for _, p in scratch.iterrows()]
    heads = transfer[[s.get("head") is not None for s in transfer.settings]]
    out += [(f"transferred, {_head_name(p['settings']['head'])}", p) for _, p in heads.iterrows()]
    base = sub[sub.technique == "baseline"]
    out += [(f"transferred, {_head_name(p['rows'][0].get('head'))} (the baseline)", p) for _, p in base.iterrows()]
    for t in COMPRESSED:
        out += [(NAMES[t], p) for _, p in sub[sub.technique == t].iterrows()]
    return out


def transfer_section(points: pd.DataFrame, base: dict) -> list:
    t = _protocol(points)
    if t is None:
        return []
    blocks = [Heading("Transfer learning"),
              Para(f"A backbone pretrained on CIFAR-10 classes {', '.join(map(str, t['source_classes']))} is "
                   f"transferred to classes {', '.join(map(str, t['target_classes']))} "
                   f"({t['train_per_class']} training and {t['val_per_class']} validation images per class, written "
                   f"as an ImageFolder tree and read back by the loader a user's tree goes through): the new head "
                   f"trains with the backbone frozen, then everything is fine-tuned at a lower LR. From scratch "
                   f"trains the same network on the same images for as many epochs as both phases together. The "
                   f"compressed rows start from the baseline (the transferred network with the custom head); "
                   f"speedups compare each runtime with itself.")]
    for fw in FRAMEWORKS:
        for arch in ARCH_NAMES:
            sub = points[(points.framework == fw) & (points.arch == arch) & ~points.controlled.astype(bool)]
            rows = _model_rows(sub)
            if not rows:
                continue
            scratch = next((p for name, p in rows if name.startswith("from scratch")), None)
            ref = None if scratch is None else scratch["test_acc"]
            b = base.get((fw, arch))
            pre = None if b is None else b["rows"][0]
            runtime = RUNTIME_NAMES.get(PRIMARY_RUNTIME.get(fw), "?")
            blocks.append(Heading(f"{FRAMEWORK_NAMES[fw]} · {ARCH_NAMES[arch]} (latency on {runtime})", 3))
            if pre is not None and pre.get("pretrain_val_acc") is not None:
                blocks.append(Para(f"Backbone: pretrained here on {fmt.integer(pre.get('pretrain_images'))} images "
                                   f"of the source classes, {fmt.pct(pre['pretrain_val_acc'])}% on their validation "
                                   f"split, in {pre.get('pretrain_time_s', 0):.0f} s of training."))
            elif pre is not None and pre.get("pretrained_from"):
                blocks.append(Para(f"Backbone: `{pre['pretrained_from']}`."))
            blocks.append(Table(COLUMNS, [
                [name, p["label"], fmt.pct(p["val_acc"]),
                 fmt.acc_cell(p["test_acc"], p["acc_std"], p["n"], p["acc_ci95"]), fmt.delta_pts(p["test_acc"], ref),
                 fmt.integer(p["params_total"]), fmt.mb(p["size_bytes"]), fmt.ms(p["latency_b1_ms_median"]),
                 fmt.ms(p["latency_b64_ms_median"]), speedup_cell(p, 1), speedup_cell(p, 64)]
                for name, p in rows]))
    return blocks
