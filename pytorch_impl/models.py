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
        self.bn = nn.BatchNorm2d(c.cout, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH)

    def forward(self, x):
        if self.subsample > 1:
            x = x[:, :, :: self.subsample, :: self.subsample]
        return self.bn(self.conv(x))


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
    def __init__(self, plan: specs.VGGPlan):
        super().__init__()
        self.features = nn.ModuleList(ConvBN(c) for c in plan.convs)
        self.pool_after = frozenset(plan.pool_after)
        self.fc1 = nn.Linear(plan.fc1.cin, plan.fc1.cout)
        self.fc1_bn = nn.BatchNorm1d(plan.fc1.cout, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH)
        self.fc2 = nn.Linear(plan.fc2.cin, plan.fc2.cout)

    def forward(self, x):
        for i, layer in enumerate(self.features):
            x = F.relu(layer(x))
            if i in self.pool_after:
                x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1_bn(self.fc1(x))))


class ResNet(nn.Module):
    def __init__(self, plan: specs.ResNetPlan):
        super().__init__()
        self.stem = ConvBN(plan.stem)
        for s in range(1, 5):
            blocks = [BasicBlock(b) for b in plan.blocks if b.name.startswith(f"layer{s}.")]
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.fc = nn.Linear(plan.fc.cin, plan.fc.cout)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(arch: str, num_classes: int = 10, width: float = 1.0, widths=None) -> nn.Module:
    """Build ``arch`` from the shared spec; ``widths`` (e.g. from a structured prune) overrides ``width``."""
    resolved = specs.resolve_widths(arch, width, widths)
    plan = specs.plan(arch, num_classes, widths=resolved)
    model = VGG(plan) if arch == "vgg16" else ResNet(plan)
    model.arch, model.widths, model.plan = arch, resolved, plan
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())
