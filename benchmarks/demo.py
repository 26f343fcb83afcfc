"""Wall time of the main job: `neurocnn demo` (target: at most 10 minutes on the 2-core CPU).

Runs the demo from scratch in a fresh folder (nothing reused) as a user would, in its own process,
and prints a table: wall time of every stage (from the demo's own stage lines), total wall and CPU
time, peak RSS, and the demo's three-line summary.

    .venv/bin/python benchmarks/demo.py            # the default demo
    .venv/bin/python benchmarks/demo.py --quick    # neurocnn demo --quick
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = re.compile(r"(\d)/6 ([a-zA-Z ,-]+?) \((\d+) s\)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    exe = Path(sys.executable).with_name("neurocnn")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(exe), "demo", "--out", str(Path(tmp) / "demo"), *(["--quick"] if args.quick else [])]
        env = {**os.environ, "COLUMNS": "200"}
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        return done.returncode
    text = done.stdout.replace("\r", "\n")
    stages = [(int(n), name.strip(), int(s)) for n, name, s in STAGE.findall(text)]
    print(
        f"`neurocnn demo{' --quick' if args.quick else ''}`, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end\n"
    )
    print("| stage | starts at s | takes s |")
    print("|---|---:|---:|")
    for (n, name, start), nxt in zip(stages, [*stages[1:], (0, "", round(wall))], strict=True):
        print(f"| {n}/6 {name} | {start} | {nxt[2] - start} |")
    print(
        f"\ntotal: {wall:.0f} s wall ({wall / 60:.1f} min), {usage.ru_utime + usage.ru_stime:.0f} s CPU, "
        f"peak RSS {usage.ru_maxrss / 1024:.0f} MB; target ≤ 600 s: {'met' if wall <= 600 else 'NOT met'}\n"
    )
    summary = text[text.find("6/6 summary") :].splitlines()[1:]
    print("\n".join(line for line in summary if line.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
