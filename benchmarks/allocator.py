"""Training throughput and page faults per step under different memory allocators.

    python benchmarks/allocator.py [--size 192] [--batch 32] [--steps 8]

Each configuration runs in a fresh subprocess (LD_PRELOAD must be set before the process starts) and prints
images/s and minor page faults per optimisation step of EfficientNet-Lite0 fine-tuning on random inputs.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from dermlens.runtime import JEMALLOC_CONF, jemalloc_path

WORKER = r"""
import resource, sys, time, torch
from dermlens.models import create_backbone
size, batch, steps = map(int, sys.argv[1:4])
model, _ = create_backbone("efficientnet_lite0", 7)
model = model.to(memory_format=torch.channels_last).train()
opt = torch.optim.AdamW(model.parameters(), 1e-4)
x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 7, (batch,))
for i in range(steps + 4):
    if i == 4:
        t, f = time.time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
dt = time.time() - t
print(f"{batch * steps / dt:.1f} {(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f) / steps:.0f}")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    base["DERMLENS_NO_JEMALLOC"] = "1"
    configs = [("glibc malloc", {})]
    library = jemalloc_path()
    if library:
        configs += [
            ("jemalloc, default settings", {"LD_PRELOAD": library}),
            (f"jemalloc, MALLOC_CONF={JEMALLOC_CONF} (dermlens default)", {"LD_PRELOAD": library, "MALLOC_CONF": JEMALLOC_CONF}),
        ]
    else:
        print("jemalloc not found (Debian: apt-get install libjemalloc2); only glibc measured")
    print(f"EfficientNet-Lite0 fine-tuning, batch {args.batch}, {args.size}px, {args.steps} timed steps, {os.cpu_count()} CPUs")
    for name, extra in configs:
        out = subprocess.run(
            [sys.executable, "-c", WORKER, str(args.size), str(args.batch), str(args.steps)],
            env={**base, **extra}, capture_output=True, text=True, check=True,
        ).stdout.split()
        print(f"  {name:<75} {float(out[0]):6.1f} img/s  {int(out[1]):>9,} page faults/step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
