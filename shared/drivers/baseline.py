"""The baseline driver: train the network on the recipe, or (controlled mode) import the source suite's."""
from __future__ import annotations

from .. import state as neutral
from ..techniques import CONTROLLED_SOURCE
from .common import measured, save_state
from .transfer import transfer_baseline


def baseline(backend, ctx, cell) -> dict:
    if ctx.preset.transfer is not None:  # the transferred network (controlled: from PyTorch's backbone)
        return transfer_baseline(backend, ctx, cell)
    if ctx.controlled:
        return imported_baseline(backend, ctx, cell)
    preset = ctx.preset
    model = backend.build(cell.arch, width=preset.width, seed=cell.seed, **ctx.network)  # the seed's weights
    stats = backend.train(model, ctx.dataset, preset.recipe, cell.seed,
                          label=f"[{backend.name} {cell.arch} s{cell.seed}]", checkpoints=ctx.checkpoints)
    # later techniques start from this checkpoint (safetensors: loading it never unpickles)
    save_state(backend, model, ctx.checkpoint_path(backend.name, cell.arch, cell.seed))
    return measured(backend, model, ctx, **stats)


def imported_baseline(backend, ctx, cell) -> dict:
    """Controlled mode: the source suite's trained baseline of this run, imported through the neutral state
    and saved as this suite's (controlled) baseline; measured here, never trained."""
    source = ctx.checkpoint_path(CONTROLLED_SOURCE, cell.arch, cell.seed)
    if not source.exists():
        raise FileNotFoundError(
            f"controlled mode needs the {CONTROLLED_SOURCE} baseline at {source}: run python -m pytorch_impl run "
            f"--preset {ctx.preset.name} --out {ctx.out_dir} --technique baseline first")
    model = backend.import_state(backend.build(cell.arch, width=ctx.preset.width, **ctx.network),
                                 neutral.load(source))
    save_state(backend, model, ctx.checkpoint_path(backend.name, cell.arch, cell.seed))
    return measured(backend, model, ctx, source_framework=CONTROLLED_SOURCE, source_checkpoint=source.name)
