"""Reproduces the native crash that made the transfer preset use batch 24 (torch 2.14.1, CPU, 2 threads):
the filter-pruned ResNet-18 widths, channels_last, batch 25 -> heap corruption in backward; NCHW, 1 thread,
or batch 24/26/32/50 run. Usage: PYTHONPATH=. python wip/repro_batch25_crash.py 25 nohead"""
import sys, torch
from shared import specs
from pytorch_impl import models
torch.manual_seed(0)
bs = int(sys.argv[1]); head = sys.argv[2] == "head"
w = [12, 12, 12, 12, 12, 24, 24, 24, 24, 48, 48, 48, 48, 96, 96, 96, 96]
m = models.build("resnet18", 2, widths=w, head=specs.Head(64) if head else None).to(memory_format=torch.channels_last)
m.train()
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
for i in range(100):
    x = torch.randn(bs, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (bs,))
    torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step(); opt.zero_grad()
print("ok", bs, head)
