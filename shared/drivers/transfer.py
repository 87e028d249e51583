"""The transfer family, once for both suites: pretrain a backbone on the source classes, replace its head,
train the head with the backbone frozen, then fine-tune everything at a lower LR; and the from-scratch
control on the same images with the same epochs.

In a preset with a ``transfer`` protocol the ``baseline`` is the transferred network (the protocol's
``baseline_head``), so every compression technique of the registry (int8, QAT, filter pruning) starts from
it and is measured like every row; the ``transfer`` cells are the comparison: from scratch, and the other
head.
"""
from __future__ import annotations

from .. import published, specs, state as neutral, transfer as T
from ..protocols import budget_figures, budget_recipe
from ..techniques import CONTROLLED_SOURCE
from .common import measured, save_state

PRETRAINED = "pretrained"  # the checkpoint name of the preset's pretrained backbone


def pretrained_state(backend, ctx, cell) -> tuple[dict, dict]:
    """(the backbone's neutral state, what the row records of it): ``--pretrained PATH`` if given, else the
    preset's own pretraining on the source classes, trained once per run and kept as a checkpoint
    (controlled mode: the PyTorch suite's, so both frameworks transfer from the same weights)."""
    t = ctx.preset.transfer
    if ctx.pretrained is not None:  # the user's file: a checkpoint of this project or published weights
        state = published.read_pretrained(ctx.pretrained, cell.arch, getattr(backend, "read_torch_file", None))
        return state, {"pretrained_from": str(ctx.pretrained)}
    if specs.input_hw(cell.arch) != specs.INPUT_HW:
        raise ValueError(f"the preset's own pretraining is on CIFAR-10's {specs.INPUT_HW}x{specs.INPUT_HW} images, "
                         f"not {cell.arch}'s {specs.input_hw(cell.arch)}: give its published weights with --pretrained")
    framework = CONTROLLED_SOURCE if ctx.controlled else backend.name
    path = ctx.checkpoint_path(framework, cell.arch, cell.seed, name=PRETRAINED)
    info = {"pretrained_from": path.name, "pretrain_classes": list(t.source_classes)}
    if path.exists():
        return neutral.load(path), info
    if ctx.controlled:
        raise FileNotFoundError(f"controlled mode needs the {CONTROLLED_SOURCE} pretrained backbone at {path}: run "
                                f"python -m pytorch_impl run --preset {ctx.preset.name} --out {ctx.out_dir} "
                                f"--technique baseline first")
    source = ctx.source_dataset
    model = backend.build(cell.arch, width=ctx.preset.width, seed=cell.seed, num_classes=len(t.source_classes))
    stats = backend.train(model, source, t.pretrain_recipe, cell.seed,
                          label=f"[{backend.name} {cell.arch} pretrain s{cell.seed}]", checkpoints=ctx.checkpoints)
    _, val_acc = backend.evaluate(model, source.val, t.pretrain_recipe.eval_batch_size)
    save_state(backend, model, path)
    info.update(pretrain_val_acc=val_acc, pretrain_time_s=stats["train_time_s"],
                pretrain_images=len(source.train), pretrain_history=stats["history"])
    return neutral.load(path), info


def transferred(backend, ctx, cell, head_kind: str) -> tuple[object, dict]:
    """A network with a new ``head_kind`` head on the pretrained backbone, trained in the protocol's two
    phases on the target data."""
    t, preset = ctx.preset.transfer, ctx.preset
    backbone, info = pretrained_state(backend, ctx, cell)
    model = backend.build(cell.arch, width=preset.width, seed=cell.seed, num_classes=ctx.dataset.num_classes,
                          head=T.head_spec(t, head_kind, preset.width))
    backend.import_state(model, T.transfer_state(backbone, backend.export_state(model), model.plan))
    n = len(ctx.dataset.train)
    phases = {}
    for phase, budget, frozen in (("head", t.head_budget, True), ("finetune", t.finetune_budget, False)):
        stats = backend.train(model, ctx.dataset, budget_recipe(preset.recipe, budget), cell.seed,
                              label=f"[{backend.name} {cell.arch} transfer {head_kind} {phase}]",
                              frozen_backbone=frozen)
        phases[phase] = {"history": stats["history"], "train_time_s": stats["train_time_s"],
                         "budget": budget_figures(preset.recipe, budget, n), "backbone_frozen": frozen}
    return model, {**info, "head": head_kind, "phases": phases,
                   "train_time_s": sum(p["train_time_s"] for p in phases.values())}


def transfer_baseline(backend, ctx, cell) -> dict:
    """The ``baseline`` of a transfer preset: the transferred network the compression cells start from."""
    model, extra = transferred(backend, ctx, cell, ctx.preset.transfer.baseline_head)
    save_state(backend, model, ctx.checkpoint_path(backend.name, cell.arch, cell.seed))
    return measured(backend, model, ctx, init="pretrained", **extra)


def transfer(backend, ctx, cell) -> dict:
    settings = {k: v for k, v in cell.settings.items() if k != "controlled"}
    preset, t = ctx.preset, ctx.preset.transfer
    if settings.get("init") == "scratch":
        # the same network (the baseline's head) on the same images, as many epochs as both phases together
        model = backend.build(cell.arch, width=preset.width, seed=cell.seed, **ctx.network)
        stats = backend.train(model, ctx.dataset, budget_recipe(preset.recipe, t.scratch_budget), cell.seed,
                              label=f"[{backend.name} {cell.arch} from scratch]")
        return measured(backend, model, ctx, init="scratch", head=t.baseline_head, history=stats["history"],
                        train_time_s=stats["train_time_s"],
                        budget=budget_figures(preset.recipe, t.scratch_budget, len(ctx.dataset.train)))
    model, extra = transferred(backend, ctx, cell, settings["head"])
    ctx.measured_network = {"num_classes": ctx.dataset.num_classes,
                            "head": T.head_spec(t, settings["head"], preset.width)}  # its artifact's head
    return measured(backend, model, ctx, init="pretrained", **extra)


REGISTRY = {"transfer": transfer}
