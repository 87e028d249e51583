"""Architectures as data: one spec, built identically by both frameworks.

A spec is a list of per-layer widths. ``width`` scales the paper widths; ``widths`` replaces them, which is
how a structured prune becomes a new architecture both suites can build. Canonical layer names double as
the keys of the framework-neutral weight state (``shared.state``), so they are PyTorch-style module paths.

Figures the tests pin (32x32 input, 10 classes):
  vgg16     14,991,946 params, 313,463,808 MACs (Li et al. 2017, Table 1: 1.5e7 params, 3.13e8 FLOPs)
  resnet18  11,173,962 params, 555,422,720 MACs (CIFAR variant: 3x3 stride-1 stem, no max-pool)
"""
from __future__ import annotations

from dataclasses import dataclass

INPUT_HW = 32
INPUT_CHANNELS = 3

# Li et al. 2017 VGG-16 for CIFAR-10: 13 conv (+bias, as the paper's parameter count requires) + BN + ReLU,
# max-pool after each of the 5 stages, FC 512 + BN + ReLU, FC classes.
VGG16_CONV_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_POOL_AFTER = (1, 3, 6, 9, 12)  # indices into the conv list
VGG16_FC_WIDTH = 512

RESNET18_STAGE_WIDTHS = (64, 128, 256, 512)
RESNET18_BLOCKS = (2, 2, 2, 2)
RESNET18_STAGE_STRIDES = (1, 2, 2, 2)

ARCHS = ("vgg16", "resnet18")


@dataclass(frozen=True)
class Conv:
    name: str  # canonical module path; its BN is ``bn_name``
    bn_name: str
    cin: int
    cout: int
    kernel: int
    stride: int
    hw_out: int  # output spatial size, for MACs
    bias: bool

    @property
    def padding(self) -> int:
        return self.kernel // 2

    @property
    def params(self) -> int:
        return self.cout * self.cin * self.kernel**2 + (self.cout if self.bias else 0) + 2 * self.cout

    @property
    def macs(self) -> int:
        return self.cout * self.cin * self.kernel**2 * self.hw_out**2


@dataclass(frozen=True)
class Linear:
    name: str
    cin: int
    cout: int
    bn_name: str | None  # VGG's hidden FC has BN + ReLU; the classifier has none

    @property
    def params(self) -> int:
        return self.cout * self.cin + self.cout + (2 * self.cout if self.bn_name else 0)

    @property
    def macs(self) -> int:
        return self.cout * self.cin


@dataclass(frozen=True)
class Block:
    """ResNet BasicBlock: conv1 -> conv2, plus identity or a 1x1 projection (conv + BN) shortcut."""

    name: str
    conv1: Conv
    conv2: Conv
    shortcut: Conv | None


@dataclass(frozen=True)
class VGGPlan:
    convs: tuple[Conv, ...]
    pool_after: tuple[int, ...]
    fc1: Linear
    fc2: Linear


@dataclass(frozen=True)
class ResNetPlan:
    stem: Conv
    blocks: tuple[Block, ...]
    fc: Linear


def scaled(base: int, width: float) -> int:
    """Width multiplier rule shared by both frameworks: round, never below 1."""
    return max(1, int(round(base * width)))


def default_widths(arch: str, width: float = 1.0) -> tuple[int, ...]:
    """The prunable widths of ``arch`` in canonical order (see ``layer_names``)."""
    if arch == "vgg16":
        return tuple(scaled(w, width) for w in (*VGG16_CONV_WIDTHS, VGG16_FC_WIDTH))
    if arch == "resnet18":
        out = [scaled(RESNET18_STAGE_WIDTHS[0], width)]  # stem
        for stage_w, n in zip(RESNET18_STAGE_WIDTHS, RESNET18_BLOCKS):
            out += [scaled(stage_w, width)] * (2 * n)
        return tuple(out)
    raise _unknown_arch(arch)


def layer_names(arch: str) -> tuple[str, ...]:
    """Names of the layers whose output width ``widths`` sets, in order."""
    if arch == "vgg16":
        return tuple(f"features.{i}" for i in range(len(VGG16_CONV_WIDTHS))) + ("fc1",)
    if arch == "resnet18":
        names = ["stem"]
        for s, n in enumerate(RESNET18_BLOCKS, start=1):
            for b in range(n):
                names += [f"layer{s}.{b}.conv1", f"layer{s}.{b}.conv2"]
        return tuple(names)
    raise _unknown_arch(arch)


def _unknown_arch(arch: str) -> ValueError:
    return ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHS)}")


def resolve_widths(arch: str, width: float = 1.0, widths=None) -> tuple[int, ...]:
    if widths is None:
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        return default_widths(arch, width)
    widths = tuple(int(w) for w in widths)
    expected = len(layer_names(arch))
    if len(widths) != expected:
        raise ValueError(
            f"{arch} takes {expected} widths ({', '.join(layer_names(arch))}), got {len(widths)}"
        )
    if min(widths) < 1:
        raise ValueError(f"every width must be >= 1, got {widths}")
    return widths


def vgg_plan(widths, num_classes: int = 10) -> VGGPlan:
    *conv_w, fc_w = widths
    convs, cin, hw = [], INPUT_CHANNELS, INPUT_HW
    for i, cout in enumerate(conv_w):
        convs.append(Conv(f"features.{i}.conv", f"features.{i}.bn", cin, cout, 3, 1, hw, bias=True))
        cin = cout
        if i in VGG16_POOL_AFTER:
            hw //= 2
    assert hw == 1, "VGG-16's five pools reduce 32x32 to 1x1, so the classifier sees exactly C features"
    fc1 = Linear("fc1", cin, fc_w, bn_name="fc1_bn")
    fc2 = Linear("fc2", fc_w, num_classes, bn_name=None)
    return VGGPlan(tuple(convs), VGG16_POOL_AFTER, fc1, fc2)


def resnet_plan(widths, num_classes: int = 10) -> ResNetPlan:
    widths = list(widths)
    stem = Conv("stem.conv", "stem.bn", INPUT_CHANNELS, widths[0], 3, 1, INPUT_HW, bias=False)
    blocks, cin, hw, k = [], widths[0], INPUT_HW, 1
    for s, (n, stride0) in enumerate(zip(RESNET18_BLOCKS, RESNET18_STAGE_STRIDES), start=1):
        for b in range(n):
            stride = stride0 if b == 0 else 1
            mid, out = widths[k], widths[k + 1]
            k += 2
            hw_out = hw // stride
            p = f"layer{s}.{b}"
            conv1 = Conv(f"{p}.conv1", f"{p}.bn1", cin, mid, 3, stride, hw_out, bias=False)
            conv2 = Conv(f"{p}.conv2", f"{p}.bn2", mid, out, 3, 1, hw_out, bias=False)
            shortcut = None
            if b == 0 and s > 1:  # the paper's projections: where a stage starts and the stride is 2
                shortcut = Conv(f"{p}.shortcut.conv", f"{p}.shortcut.bn", cin, out, 1, stride, hw_out, bias=False)
            elif cin != out:
                raise ValueError(
                    f"{p}: identity shortcut needs conv2 width {out} == block input width {cin}; "
                    f"residual-coupled widths (a stage's block outputs, and the stem with layer1) must be "
                    f"pruned together"
                )
            blocks.append(Block(p, conv1, conv2, shortcut))
            cin, hw = out, hw_out
    return ResNetPlan(stem, tuple(blocks), Linear("fc", cin, num_classes, bn_name=None))


def plan(arch: str, num_classes: int = 10, width: float = 1.0, widths=None):
    w = resolve_widths(arch, width, widths)
    return vgg_plan(w, num_classes) if arch == "vgg16" else resnet_plan(w, num_classes)


def convs_of(p) -> list[Conv]:
    if isinstance(p, VGGPlan):
        return list(p.convs)
    out = [p.stem]
    for blk in p.blocks:
        out += [blk.conv1, blk.conv2] + ([blk.shortcut] if blk.shortcut else [])
    return out


def linears_of(p) -> list[Linear]:
    return [p.fc1, p.fc2] if isinstance(p, VGGPlan) else [p.fc]


def count_params(p) -> int:
    """Trainable parameters: weights, biases, BN gamma/beta. BN running statistics are buffers, not params."""
    return sum(c.params for c in convs_of(p)) + sum(l.params for l in linears_of(p))


def count_macs(p) -> int:
    """Multiply-accumulates of conv and linear layers for one 32x32 image (Li et al.'s FLOP convention)."""
    return sum(c.macs for c in convs_of(p)) + sum(l.macs for l in linears_of(p))
