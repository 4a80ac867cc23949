"""Time the onnxviz commands on a VGG16-sized model (and `onnxviz demo`): wall time and peak RSS, medians of N runs.

Each run is a fresh process (import + load included), measured with ``os.wait4`` so the peak
RSS is that process's own. Makes the random VGG16 (``make_random_vgg16.py``) if it is missing.

    python scripts/bench_cli.py [--runs 5] [--model /tmp/vgg16_random.onnx] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"error: {' '.join(argv)} failed: {proc.stderr.read().decode().strip()}")
    return wall, usage.ru_maxrss / 1024


def options(doc: str, argv=None) -> argparse.Namespace:
    """``--runs``, ``--model`` (the random VGG16, made if it is missing) and ``--markdown``:
    what the benchmark scripts share."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--model", default=os.path.join(tempfile.gettempdir(), "vgg16_random.onnx"))
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = p.parse_args(argv)
    if not os.path.exists(args.model):
        subprocess.run([sys.executable, os.path.join(HERE, "make_random_vgg16.py"), "-o", args.model], check=True)
    return args


def main(argv=None) -> int:
    args = options(__doc__, argv)
    import matplotlib.cbook

    photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    out = tempfile.mkdtemp(prefix="onnxviz-bench-")
    cli = [sys.executable, "-m", "onnxviz"]
    jobs = {
        "summary": cli + ["summary", args.model],
        "filters (block1_conv1)": cli + ["filters", args.model, "-o", f"{out}/f.png"],
        "features, 5 stage ends": cli + ["features", args.model, photo, "-o", f"{out}/s.png"],
        "features, all 13 convs": cli + ["features", args.model, photo, "--layer", "*", "-o", f"{out}/a.png"],
        "features, block1_conv1": cli + ["features", args.model, photo, "--layer", "block1_conv1", "-o", f"{out}/b.png"],
        "demo (shipped demo model, 9 files)": cli + ["demo", "-o", f"{out}/demo"],
    }
    results = {name: [] for name in jobs}
    for _ in range(args.runs):  # interleaved, so machine noise spreads over all jobs
        for name, job in jobs.items():
            results[name].append(measure(job))
    size = os.path.getsize(args.model) / 1e6
    print(f"model: {args.model} ({size:.0f} MB), {args.runs} runs each, medians")
    print("| command | wall s | peak RSS MB |" if args.markdown else f"{'command':28} wall s   peak MB")
    if args.markdown:
        print("|---|---|---|")
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        rss = statistics.median(r[1] for r in runs)
        print(f"| {name} | {wall:.2f} | {rss:.0f} |" if args.markdown else f"{name:28} {wall:6.2f}   {rss:7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
