"""Time the onnxviz commands on a model above 2 GiB (external data): wall time and peak RSS, medians.

The model is ``make_large_model.py``'s (2.15 GB of weights, eight 256 MiB 1×1 convs), written
into a temporary folder and deleted afterwards (``--folder``: written there and kept). Each run
is a fresh process measured with ``os.wait4`` from a small runner process (a child's
``ru_maxrss`` starts at its parent's peak on Linux, and this script holds ~90 MB after
writing the model); "needed" is the bytes
of weights the command has to read, so that peak − needed is what onnxviz adds on top.

    python scripts/bench_large.py [--runs 3] [--folder /tmp/large] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import make_large_model  # noqa: E402

MiB = 1 << 20

_RUNNER = r"""
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss / 1024]))
"""


def measure(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one process, started by a runner with a small peak of its own."""
    res = subprocess.run([sys.executable, "-c", _RUNNER, *argv], capture_output=True, text=True)
    code, wall, peak = json.loads(res.stdout) if res.returncode == 0 else (res.returncode, 0, 0)
    if code:
        raise SystemExit(f"error: {' '.join(argv)} failed: {res.stderr.strip()}")
    return wall, peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--folder", help="write the model there and keep it; default: a temporary folder, deleted")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)
    folder = args.folder or tempfile.mkdtemp(prefix="onnxviz-large-")
    out = tempfile.mkdtemp(prefix="onnxviz-bench-")
    try:
        start = time.perf_counter()
        info = make_large_model.write(folder)
        made = time.perf_counter() - start
        image = os.path.join(out, "image.png")
        Image.fromarray((np.random.default_rng(3).random((8, 8, 3)) * 255).astype(np.uint8)).save(image)
        sizes, model = info["layers"], info["model"]
        everything = sum(sizes.values())
        cli = [sys.executable, "-m", "onnxviz"]
        jobs = {  # name: (argv, weights needed)
            "summary": (cli + ["summary", model], 0),
            "filters (stem, the default)": (cli + ["filters", model, "-o", f"{out}/f.png"], sizes["stem"]),
            "filters big8 (256 MiB)": (cli + ["filters", model, "--layer", "big8", "-o", f"{out}/g.png"], sizes["big8"]),
            "features stem": (cli + ["features", model, image, "--layer", "stem", "-o", f"{out}/s.png"], sizes["stem"]),
            "features big1": (cli + ["features", model, image, "--layer", "big1", "-o", f"{out}/b.png"],
                              sizes["stem"] + sizes["big1"]),
            "features head (deepest; the default)": (cli + ["features", model, image, "-o", f"{out}/h.png"], everything),
            "features, all 10 layers": (cli + ["features", model, image, "--layer", "*", "-o", f"{out}/a.png"], everything),
        }
        results = {name: [] for name in jobs}
        for _ in range(args.runs):  # interleaved, so machine noise spreads over all jobs
            for name, (job, _) in jobs.items():
                results[name].append(measure(job))
        print(f"model: {model} + {os.path.basename(info['data'])} ({info['data_bytes']:,} bytes of weights, "
              f"written in {made:.1f} s), {args.runs} runs each, medians; MiB = 2^20 bytes")
        head = "| command | wall s | peak RSS MiB | weights needed MiB | peak − needed MiB |"
        print(head if args.markdown else f"{'command':40} wall s   peak   needed   peak-needed")
        if args.markdown:
            print("|---|---|---|---|---|")
        for name, runs in results.items():
            wall = statistics.median(r[0] for r in runs)
            rss = statistics.median(r[1] for r in runs)
            need = jobs[name][1] / MiB
            print(f"| {name} | {wall:.2f} | {rss:.0f} | {need:.0f} | {rss - need:.0f} |" if args.markdown
                  else f"{name:40} {wall:6.2f} {rss:6.0f} {need:8.0f} {rss - need:8.0f}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if not args.folder:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
