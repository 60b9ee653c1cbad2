"""Start-up: the time from starting a `dermlens` command to its first output, as a user waits for it.

    python benchmarks/startup.py [--repeats 5] [--model DIR]

Runs, each ``--repeats`` times in a fresh process, and prints the median and the range of the time from the start
of the process to the first byte it writes (stdout or stderr), to its end, and the CPU seconds it used (the
figure that tells what an idle machine's wall time would be when the machine is busy):

    dermlens --help                         the command's own help
    dermlens predict x.jpg --format xml     a wrong option value: told in one line
    dermlens predict one.jpg                one generated 600x450 JPEG, default options (engine auto: ONNX Runtime
                                            fp32, the export cached in <tmp>/cache after one untimed warm-up run)

It states the CPU, the number of cores and the load average before and after: start-up is mostly importing and
reading files, so other work on the machine shows directly in these figures. The command is the ``dermlens``
script beside this Python when there is one (what a user runs), else ``python -m dermlens``.
"""
from __future__ import annotations

import argparse
import os
import platform
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dermlens.runtime import cpu_name

REPO = Path(__file__).resolve().parents[1]


def dermlens_command() -> list[str]:
    script = Path(sys.executable).with_name("dermlens")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dermlens"]


def time_to_first_output(command: list[str], env: dict) -> tuple[float, float, int, float]:
    """(seconds to the first byte on stdout or stderr, seconds to exit, exit code, CPU seconds the process used).

    The CPU seconds (user + system, from wait4) barely depend on other work on the machine: start-up is one thread
    importing and reading, so on an idle machine the wall time to exit is about this figure."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = None
    selector = selectors.DefaultSelector()
    for stream in (process.stdout, process.stderr):
        selector.register(stream, selectors.EVENT_READ)
    open_streams = 2
    while open_streams:
        for key, _ in selector.select():
            data = os.read(key.fileobj.fileno(), 65536)
            if not data:
                selector.unregister(key.fileobj)
                open_streams -= 1
            elif first is None:
                first = time.perf_counter() - started
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    ended = time.perf_counter() - started
    return (ended if first is None else first), ended, process.returncode, usage.ru_utime + usage.ru_stime


def make_photo(path: Path) -> Path:
    import numpy as np

    from dermlens.data.synthetic import render_lesion

    render_lesion("melanoma", np.random.default_rng(0), size=450).resize((600, 450)).save(path, quality=90)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", type=Path, default=None, help="Model folder for predict; default the bundled one.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dermlens-startup-"))
    env = {**os.environ, "DERMLENS_CACHE": str(work / "cache"), "PYTHONPATH": str(REPO / "src")}
    photo = make_photo(work / "one.jpg")
    base = dermlens_command()
    model = ["--model", str(args.model)] if args.model else []
    cases = {
        "--help": base + ["--help"],
        "bad option (predict --format xml)": base + ["predict", str(photo), "--format", "xml"],
        "predict one photo": base + ["predict", str(photo), "--no-progress", *model],
    }
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; Python {platform.python_version()}; "
          f"command: {' '.join(base)}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    warm = time_to_first_output(cases["predict one photo"], env)  # makes and caches the ONNX export
    print(f"warm-up predict (makes the ONNX export): first output {warm[0]:.2f} s, exit code {warm[2]}")
    for name, command in cases.items():
        firsts, ends, cpus, codes = [], [], [], set()
        for _ in range(args.repeats):
            first, end, code, cpu = time_to_first_output(command, env)
            firsts.append(first)
            ends.append(end)
            cpus.append(cpu)
            codes.add(code)
        print(f"{name:<36} first output {statistics.median(firsts):5.2f} s (range {min(firsts):.2f}-{max(firsts):.2f}), "
              f"exit after {statistics.median(ends):5.2f} s, CPU {statistics.median(cpus):5.2f} s, "
              f"exit code {sorted(codes)}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
