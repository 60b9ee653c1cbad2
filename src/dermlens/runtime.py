"""Process set-up that must happen before Python starts: the memory allocator.

Measured on this project's 2-core CPU machine (EfficientNet-Lite0, batch 32, 192 px, fine-tuning; benchmarks/allocator.py):

    glibc malloc                          35 img/s   217,000 page faults per step
    jemalloc, default decay               18 img/s   977,000 page faults per step
    jemalloc, decay off, no oversize arena 51 img/s        42 page faults per step

PyTorch frees and re-allocates the same large activation buffers every step; glibc (for blocks over 32 MB) and
jemalloc's default decay hand them back to the kernel, so every step faults them in again. jemalloc with purging
disabled keeps them, which is what a long-running training or inference process wants. The `dermlens` command
re-executes itself once with jemalloc preloaded when the library is present (Debian: libjemalloc2), unless
DERMLENS_NO_JEMALLOC=1.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

JEMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
)
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1,oversize_threshold:0"


def jemalloc_path() -> str | None:
    return next((p for p in JEMALLOC_CANDIDATES if Path(p).is_file()), None)


def allocator_environment(env: dict[str, str] | None = None) -> dict[str, str] | None:
    """The environment to re-execute with, or None when no change is needed or possible."""
    env = dict(os.environ if env is None else env)
    if env.get("DERMLENS_NO_JEMALLOC") == "1" or "jemalloc" in env.get("LD_PRELOAD", ""):
        return None
    library = jemalloc_path()
    if library is None or not sys.platform.startswith("linux"):
        return None
    env["LD_PRELOAD"] = ":".join(filter(None, [library, env.get("LD_PRELOAD", "")]))
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    return env


def reexec_with_jemalloc() -> None:
    """Replace this process by the same command with jemalloc preloaded (no return), when that helps."""
    env = allocator_environment()
    if env is None:
        return
    os.execve(sys.executable, [sys.executable, "-m", "dermlens", *sys.argv[1:]], env)


def cpu_name() -> str:
    """The CPU's model name, which every benchmark prints beside its figures (machines vary between sessions)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
