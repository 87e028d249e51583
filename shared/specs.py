"""Architectures as data: one spec, built identically by both frameworks.

A spec is a list of per-layer widths. ``width`` scales the paper widths; ``widths`` replaces them, which is
how a structured prune becomes a new architecture both suites can build. Canonical layer names double as
the keys of the framework-neutral weight state (``shared.state``), so they are PyTorch-style module paths.

Figures the tests pin (32x32 input, 10 classes):
  vgg16        14,991,946 params, 313,463,808 MACs (Li et al. 2017, Table 1: 1.5e7 params, 3.13e8 FLOPs)
  resnet18     11,173,962 params, 555,422,720 MACs (CIFAR variant: 3x3 stride-1 stem, no max-pool)
  cnn           2,123,402 params,   7,705,600 MACs (conv 32, pool, conv 64, pool, FC 512, FC 10)
  cnn_dropout   2,169,770 params,  26,579,968 MACs (conv 32 x2, pool, dropout .25, conv 64 x2, pool,
                                                   dropout .25, FC 512, dropout .5, FC 10)

The two custom CNNs stand for the seed's small CIFAR network (~62%) and its deeper, dropout-regularised
version (~74%): the second is the Keras ``cifar10_cnn`` example's layout. Every conv and the hidden FC
carry BN as in VGG-16, so every technique of the registry applies to them unchanged. Their classifier
flattens an 8x8 map: the neutral state keeps PyTorch's (C, H, W) flatten order (``Linear.spatial``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

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

# torchvision's ResNet-50 (v1.5: the stride sits on the bottleneck's 3x3) and VGG-16 (no BN), 224x224 input.
RESNET50_BLOCKS = (3, 4, 6, 3)
BOTTLENECK_EXPANSION = 4
IMAGENET_HW = 224


@dataclass(frozen=True)
class PlainStack:
    """A VGG-style stack: convs (3x3, BN where ``bn``, ReLU) with 2x2 max-pools after some, hidden FCs (BN
    where ``bn``, ReLU), a classifier. Dropout, where its rate is > 0, follows each pool and each hidden FC."""

    conv_widths: tuple[int, ...]
    pool_after: tuple[int, ...]  # indices into conv_widths
    fc_widths: tuple[int, ...]  # the hidden FCs
    pool_dropout: float = 0.0
    fc_dropout: float = 0.0
    bn: bool = True
    input_hw: int = INPUT_HW


PLAIN_STACKS = {
    "vgg16": PlainStack(VGG16_CONV_WIDTHS, VGG16_POOL_AFTER, (VGG16_FC_WIDTH,)),
    "cnn": PlainStack((32, 64), (0, 1), (512,)),
    "cnn_dropout": PlainStack((32, 32, 64, 64), (1, 3), (512,), pool_dropout=0.25, fc_dropout=0.5),
    # torchvision's vgg16: convs with bias and no BN, FC 4096 -> ReLU -> dropout 0.5, twice. Its
    # AdaptiveAvgPool2d((7, 7)) is the identity on the 7x7 map a 224x224 input leaves, so the spec omits it.
    "vgg16_imagenet": PlainStack(VGG16_CONV_WIDTHS, VGG16_POOL_AFTER, (4096, 4096), fc_dropout=0.5, bn=False,
                                 input_hw=IMAGENET_HW),
}

ARCHS = ("vgg16", "resnet18", "cnn", "cnn_dropout")  # the CIFAR-10 architectures every CIFAR preset runs
IMAGENET_ARCHS = ("resnet50", "vgg16_imagenet")  # torchvision's layouts, for published weights and transfer
ALL_ARCHS = ARCHS + IMAGENET_ARCHS


@dataclass(frozen=True)
class Conv:
    name: str  # canonical module path; its BN is ``bn_name`` (None: no BN, torchvision's VGG-16)
    bn_name: str | None
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
        return self.cout * self.cin * self.kernel**2 + (self.cout if self.bias else 0) + (
            2 * self.cout if self.bn_name else 0)

    @property
    def macs(self) -> int:
        return self.cout * self.cin * self.kernel**2 * self.hw_out**2


@dataclass(frozen=True)
class Linear:
    name: str
    cin: int  # input features: channels x spatial
    cout: int
    bn_name: str | None  # VGG's hidden FC has BN + ReLU; the classifier has none
    spatial: int = 1  # positions per input channel when it flattens an HxW map (PyTorch's C, H, W order)

    @property
    def params(self) -> int:
        return self.cout * self.cin + self.cout + (2 * self.cout if self.bn_name else 0)

    @property
    def macs(self) -> int:
        return self.cout * self.cin


@dataclass(frozen=True)
class Block:
    """ResNet BasicBlock (conv1 -> conv2) or Bottleneck (1x1 conv1 -> 3x3 conv2 -> 1x1 conv3), plus identity
    or a 1x1 projection (conv + BN) shortcut."""

    name: str
    conv1: Conv
    conv2: Conv
    shortcut: Conv | None
    conv3: Conv | None = None

    @property
    def convs(self) -> list[Conv]:
        return [self.conv1, self.conv2] + ([self.conv3] if self.conv3 else [])

    @property
    def last(self) -> Conv:
        return self.conv3 or self.conv2


@dataclass(frozen=True)
class Head:
    """A classifier head replacing a ResNet's single FC (transfer learning's custom head): FC ``hidden``,
    ReLU, dropout ``dropout``, then the classifier."""

    hidden: int
    dropout: float = 0.5

    def __post_init__(self):
        if self.hidden < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"a head needs hidden >= 1 and dropout in [0, 1), got {self.hidden}, {self.dropout}")


@dataclass(frozen=True)
class VGGPlan:
    convs: tuple[Conv, ...]
    pool_after: tuple[int, ...]
    hidden: tuple[Linear, ...]  # fc1 .. fcK, each followed by (BN,) ReLU (and dropout)
    classifier: Linear  # fc{K+1}
    pool_dropout: float = 0.0
    fc_dropout: float = 0.0
    input_hw: int = INPUT_HW


@dataclass(frozen=True)
class ResNetPlan:
    stem: Conv
    blocks: tuple[Block, ...]
    fc: Linear
    stem_pool: bool = False  # ImageNet ResNets: 3x3 stride-2 max-pool (padding 1) after the stem
    input_hw: int = INPUT_HW
    head_fc: Linear | None = None  # a custom head's hidden FC (``Head``), before ``fc``
    head_dropout: float = 0.0


def scaled(base: int, width: float) -> int:
    """Width multiplier rule shared by both frameworks: round, never below 1."""
    return max(1, int(round(base * width)))


def default_widths(arch: str, width: float = 1.0) -> tuple[int, ...]:
    """The prunable widths of ``arch`` in canonical order (see ``layer_names``)."""
    if arch in PLAIN_STACKS:
        stack = PLAIN_STACKS[arch]
        return tuple(scaled(w, width) for w in (*stack.conv_widths, *stack.fc_widths))
    if arch == "resnet18":
        out = [scaled(RESNET18_STAGE_WIDTHS[0], width)]  # stem
        for stage_w, n in zip(RESNET18_STAGE_WIDTHS, RESNET18_BLOCKS):
            out += [scaled(stage_w, width)] * (2 * n)
        return tuple(out)
    if arch == "resnet50":
        out = [scaled(RESNET18_STAGE_WIDTHS[0], width)]
        for stage_w, n in zip(RESNET18_STAGE_WIDTHS, RESNET50_BLOCKS):
            mid = scaled(stage_w, width)
            out += [mid, mid, scaled(stage_w * BOTTLENECK_EXPANSION, width)] * n
        return tuple(out)
    raise _unknown_arch(arch)


def layer_names(arch: str) -> tuple[str, ...]:
    """Names of the layers whose output width ``widths`` sets, in order."""
    if arch in PLAIN_STACKS:
        stack = PLAIN_STACKS[arch]
        return tuple(f"features.{i}" for i in range(len(stack.conv_widths))) + tuple(
            f"fc{k}" for k in range(1, len(stack.fc_widths) + 1))
    if arch in ("resnet18", "resnet50"):
        blocks, convs = (RESNET18_BLOCKS, 2) if arch == "resnet18" else (RESNET50_BLOCKS, 3)
        names = ["stem"]
        for s, n in enumerate(blocks, start=1):
            for b in range(n):
                names += [f"layer{s}.{b}.conv{k}" for k in range(1, convs + 1)]
        return tuple(names)
    raise _unknown_arch(arch)


def input_hw(arch: str) -> int:
    """The square input size ``arch`` is built for (CIFAR 32, ImageNet 224)."""
    if arch in PLAIN_STACKS:
        return PLAIN_STACKS[arch].input_hw
    if arch in ("resnet18", "resnet50"):
        return IMAGENET_HW if arch == "resnet50" else INPUT_HW
    raise _unknown_arch(arch)


def _unknown_arch(arch: str) -> ValueError:
    return ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(ALL_ARCHS)}")


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


def vgg_plan(widths, num_classes: int = 10, arch: str = "vgg16") -> VGGPlan:
    stack = PLAIN_STACKS[arch]
    n_conv = len(stack.conv_widths)
    conv_w, fc_w = widths[:n_conv], widths[n_conv:]
    convs, cin, hw = [], INPUT_CHANNELS, stack.input_hw
    for i, cout in enumerate(conv_w):
        bn = f"features.{i}.bn" if stack.bn else None
        convs.append(Conv(f"features.{i}.conv", bn, cin, cout, 3, 1, hw, bias=True))
        cin = cout
        if i in stack.pool_after:
            hw //= 2
    # VGG-16's five pools reduce 32x32 to 1x1 (spatial 1: the classifier sees exactly C features)
    hidden, spatial = [], hw * hw
    for k, cout in enumerate(fc_w, start=1):
        hidden.append(Linear(f"fc{k}", cin * spatial, cout, bn_name=f"fc{k}_bn" if stack.bn else None,
                             spatial=spatial))
        cin, spatial = cout, 1
    classifier = Linear(f"fc{len(fc_w) + 1}", cin, num_classes, bn_name=None)
    return VGGPlan(tuple(convs), stack.pool_after, tuple(hidden), classifier, stack.pool_dropout,
                   stack.fc_dropout, stack.input_hw)


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


def bottleneck_plan(widths, num_classes: int = 1000) -> ResNetPlan:
    """torchvision's ResNet-50 v1.5: 7x7/2 stem, 3x3/2 max-pool, bottlenecks with the stride on the 3x3 and a
    projection shortcut opening every stage."""
    widths = list(widths)
    hw = IMAGENET_HW // 2
    stem = Conv("stem.conv", "stem.bn", INPUT_CHANNELS, widths[0], 7, 2, hw, bias=False)
    blocks, cin, hw, k = [], widths[0], hw // 2, 1
    for s, (n, stride0) in enumerate(zip(RESNET50_BLOCKS, RESNET18_STAGE_STRIDES), start=1):
        for b in range(n):
            stride = stride0 if b == 0 else 1
            mid1, mid2, out = widths[k:k + 3]
            k += 3
            hw_out = hw // stride
            p = f"layer{s}.{b}"
            conv1 = Conv(f"{p}.conv1", f"{p}.bn1", cin, mid1, 1, 1, hw, bias=False)
            conv2 = Conv(f"{p}.conv2", f"{p}.bn2", mid1, mid2, 3, stride, hw_out, bias=False)
            conv3 = Conv(f"{p}.conv3", f"{p}.bn3", mid2, out, 1, 1, hw_out, bias=False)
            shortcut = None
            if b == 0:
                shortcut = Conv(f"{p}.shortcut.conv", f"{p}.shortcut.bn", cin, out, 1, stride, hw_out, bias=False)
            elif cin != out:
                raise ValueError(f"{p}: identity shortcut needs conv3 width {out} == block input width {cin}; a "
                                 f"stage's block outputs must be pruned together")
            blocks.append(Block(p, conv1, conv2, shortcut, conv3))
            cin, hw = out, hw_out
    return ResNetPlan(stem, tuple(blocks), Linear("fc", cin, num_classes, bn_name=None), stem_pool=True,
                      input_hw=IMAGENET_HW)


_PLANS = {"resnet18": resnet_plan, "resnet50": bottleneck_plan}


def plan(arch: str, num_classes: int = 10, width: float = 1.0, widths=None, head: Head | None = None):
    w = resolve_widths(arch, width, widths)
    if arch in PLAIN_STACKS:
        if head is not None:
            raise ValueError(f"a custom head replaces a ResNet's FC; {arch} keeps its own classifier")
        return vgg_plan(w, num_classes, arch)
    p = _PLANS[arch](w, num_classes)
    if head is None:
        return p
    cin = p.fc.cin
    return replace(p, head_fc=Linear("head_fc", cin, head.hidden, bn_name=None),
                   fc=Linear("fc", head.hidden, num_classes, bn_name=None), head_dropout=head.dropout)


def head_of(p) -> Head | None:
    """The custom head a plan was built with (None: the architecture's own classifier)."""
    head_fc = getattr(p, "head_fc", None)
    return None if head_fc is None else Head(head_fc.cout, p.head_dropout)


def head_modules(p) -> tuple[str, ...]:
    """Module names of the classifier head: what transfer learning replaces and trains first."""
    if isinstance(p, VGGPlan):
        return (p.classifier.name,)
    return ("head_fc", "fc") if p.head_fc is not None else ("fc",)



def convs_of(p) -> list[Conv]:
    if isinstance(p, VGGPlan):
        return list(p.convs)
    out = [p.stem]
    for blk in p.blocks:
        out += blk.convs + ([blk.shortcut] if blk.shortcut else [])
    return out


def linears_of(p) -> list[Linear]:
    if isinstance(p, VGGPlan):
        return [*p.hidden, p.classifier]
    return [p.head_fc, p.fc] if p.head_fc is not None else [p.fc]


def count_params(p) -> int:
    """Trainable parameters: weights, biases, BN gamma/beta. BN running statistics are buffers, not params."""
    return sum(c.params for c in convs_of(p)) + sum(l.params for l in linears_of(p))


def count_macs(p) -> int:
    """Multiply-accumulates of conv and linear layers for one image (Li et al.'s FLOP convention)."""
    return sum(c.macs for c in convs_of(p)) + sum(l.macs for l in linears_of(p))
