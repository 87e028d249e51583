"""PyTorch networks built from the shared spec; module paths are the spec's canonical names."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from shared import specs
from shared.conventions import BN_EPS, BN_MOMENTUM_TORCH


# oneDNN's AVX2 kernel for the weight gradient of a strided 1x1 convolution on channels_last input with fewer
# than 8 input channels crashes (segfault with 1 thread, a spinning hang with 2; torch 2.14.1 on an AVX2-only
# EPYC; AVX-512 machines are unaffected). Such a conv (a ResNet shortcut at the smoke width, or after a deep
# filter prune) subsamples first and convolves at stride 1: the same function, the same weights.
SUBSAMPLE_BELOW_CIN = 8


class ConvBN(nn.Module):
    def __init__(self, c: specs.Conv):
        super().__init__()
        self.subsample = c.stride if c.kernel == 1 and c.stride > 1 and c.cin < SUBSAMPLE_BELOW_CIN else 1
        stride = 1 if self.subsample > 1 else c.stride
        self.conv = nn.Conv2d(c.cin, c.cout, c.kernel, stride, c.padding, bias=c.bias)
        self.bn = _bn2d(c)

    def forward(self, x):
        if self.subsample > 1:
            x = x[:, :, :: self.subsample, :: self.subsample]
        x = self.conv(x)
        return x if self.bn is None else self.bn(x)


def _bn2d(c: specs.Conv):
    return nn.BatchNorm2d(c.cout, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH) if c.bn_name else None


class BasicBlock(nn.Module):
    def __init__(self, blk: specs.Block):
        super().__init__()
        self.conv1 = nn.Conv2d(blk.conv1.cin, blk.conv1.cout, 3, blk.conv1.stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(blk.conv1.cout, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH)
        self.conv2 = nn.Conv2d(blk.conv2.cin, blk.conv2.cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(blk.conv2.cout, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH)
        self.shortcut = ConvBN(blk.shortcut) if blk.shortcut else nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class VGG(nn.Module):
    """A plain stack (``specs.PLAIN_STACKS``): VGG-16 (CIFAR and torchvision's) and the custom CNNs."""

    def __init__(self, plan: specs.VGGPlan):
        super().__init__()
        self.features = nn.ModuleList(ConvBN(c) for c in plan.convs)
        self.pool_after = frozenset(plan.pool_after)
        # None where the rate is 0, so VGG-16's traced graphs (quantization, pruning) have no extra node
        self.pool_drop = nn.Dropout(plan.pool_dropout) if plan.pool_dropout else None
        self.fc_drop = nn.Dropout(plan.fc_dropout) if plan.fc_dropout else None
        self.hidden = [(lin.name, lin.bn_name) for lin in plan.hidden]
        for lin in plan.hidden:
            setattr(self, lin.name, nn.Linear(lin.cin, lin.cout))
            if lin.bn_name:
                setattr(self, lin.bn_name, nn.BatchNorm1d(lin.cout, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH))
        self.classifier_name = plan.classifier.name
        setattr(self, plan.classifier.name, nn.Linear(plan.classifier.cin, plan.classifier.cout))

    def forward(self, x):
        for i, layer in enumerate(self.features):
            x = F.relu(layer(x))
            if i in self.pool_after:
                x = F.max_pool2d(x, 2)
                if self.pool_drop is not None:
                    x = self.pool_drop(x)
        x = torch.flatten(x, 1)  # (C, H, W) order: the neutral state's (Linear.spatial)
        for fc, bn in self.hidden:
            x = getattr(self, fc)(x)
            x = F.relu(getattr(self, bn)(x) if bn else x)
            if self.fc_drop is not None:
                x = self.fc_drop(x)
        return getattr(self, self.classifier_name)(x)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride on the 3x3 conv2."""

    def __init__(self, blk: specs.Block):
        super().__init__()
        for k, c in enumerate(blk.convs, start=1):
            setattr(self, f"conv{k}", nn.Conv2d(c.cin, c.cout, c.kernel, c.stride, c.padding, bias=False))
            setattr(self, f"bn{k}", nn.BatchNorm2d(c.cout, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH))
        self.shortcut = ConvBN(blk.shortcut) if blk.shortcut else nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, plan: specs.ResNetPlan):
        super().__init__()
        self.stem = ConvBN(plan.stem)
        self.stem_pool = plan.stem_pool
        for s in range(1, 5):
            blocks = [(Bottleneck if b.conv3 else BasicBlock)(b) for b in plan.blocks
                      if b.name.startswith(f"layer{s}.")]
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.head_fc = nn.Linear(plan.head_fc.cin, plan.head_fc.cout) if plan.head_fc else None
        self.head_drop = nn.Dropout(plan.head_dropout) if plan.head_fc and plan.head_dropout else None
        self.fc = nn.Linear(plan.fc.cin, plan.fc.cout)

    def forward(self, x):
        x = F.relu(self.stem(x))
        if self.stem_pool:
            x = F.max_pool2d(x, 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        if self.head_fc is not None:  # a transfer-learning head: FC, ReLU, dropout
            x = F.relu(self.head_fc(x))
            if self.head_drop is not None:
                x = self.head_drop(x)
        return self.fc(x)


def build(arch: str, num_classes: int = 10, width: float = 1.0, widths=None, head: specs.Head | None = None
          ) -> nn.Module:
    """Build ``arch`` from the shared spec; ``widths`` (e.g. from a structured prune) overrides ``width``;
    ``head`` replaces a ResNet's FC with a custom head."""
    resolved = specs.resolve_widths(arch, width, widths)
    plan = specs.plan(arch, num_classes, widths=resolved, head=head)
    model = VGG(plan) if isinstance(plan, specs.VGGPlan) else ResNet(plan)
    model.arch, model.widths, model.plan = arch, resolved, plan
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())
