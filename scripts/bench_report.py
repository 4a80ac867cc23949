"""Time `onnxviz report` (demo model, VGG16-sized model; 2 images, default layers) and the PNG
encoding of its maps serially and in a thread pool, medians of N runs side by side.

End to end: each run is a fresh process (import, load, two onnxruntime runs, drawing,
encoding, writing), its wall time and peak RSS from ``os.wait4``; the report's size.
Encoding: the VGG16 maps computed once, then every tile of the 5 default layers normalised
and encoded (what :mod:`onnxviz.report.builder` does) with 1, 2 and 4 threads, the runs
interleaved so that a load change hits all of them alike.

    python scripts/bench_report.py [--runs 5] [--model /tmp/vgg16_random.onnx] [--markdown]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_cli import measure, options  # noqa: E402  (one process's wall time and peak RSS; the options)


def encode_all(maps: dict, workers: int) -> int:
    """Every tile of every layer normalised and encoded with ``workers`` threads; total bytes."""
    from onnxviz.render.colormaps import lut
    from onnxviz.render.encode import indexed_png
    from onnxviz.report.builder import _grids

    palette = lut("viridis")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def encode(items, picture=False):
            return [pool.submit(indexed_png, a, palette) for a in items]

        grids = [g for fm in maps.values() for g in _grids(fm, 64, 8, encode)]
        return sum(len(f.result()) for g in grids for f in g.pngs.values())


def main(argv=None) -> int:
    args = options(__doc__, argv)
    import matplotlib.cbook

    images = [matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False),
              os.path.join(ROOT, "models", "demo_sample.png")]
    out = tempfile.mkdtemp(prefix="bench-report-")
    rows = []
    for label, model in (("demo model (64×64, 3 layers)", os.path.join(ROOT, "models", "demo.onnx")),
                         ("VGG16, random weights (224×224, 5 layers)", args.model)):
        html = os.path.join(out, "r.html")
        cmd = [sys.executable, "-m", "onnxviz", "report", model, *images, "-q", "-o", html]
        runs = [measure(cmd) for _ in range(args.runs)]
        rows.append((label, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
                     os.path.getsize(html)))
    import onnxviz

    m = onnxviz.load(args.model)
    maps = m.feature_maps(images, m.stage_ends())
    threads = (1, 2, 4)
    times = {w: [] for w in threads}
    for _ in range(args.runs):
        for w in threads:
            start = time.perf_counter()
            total = encode_all(maps, w)
            times[w].append(time.perf_counter() - start)
    enc = {w: statistics.median(t) for w, t in times.items()}
    if args.markdown:
        print("| model | report time (median) | peak RSS | report size |\n|---|---|---|---|")
        for label, wall, rss, size in rows:
            print(f"| {label} | {wall:.2f} s | {rss:.0f} MB | {size / 1e6:.2f} MB |")
        print(f"\n| encoding the VGG16 tiles ({total / 1e6:.1f} MB of PNG) | median | vs 1 thread |\n|---|---|---|")
        for w in threads:
            print(f"| {w} thread{'s' if w > 1 else ''} | {enc[w]:.3f} s | {enc[1] / enc[w]:.2f}× |")
    else:
        for label, wall, rss, size in rows:
            print(f"{label:45s} {wall:6.2f} s  {rss:6.0f} MB  {size / 1e6:6.2f} MB")
        for w in threads:
            print(f"encode VGG16 tiles, {w} thread(s): {enc[w]:.3f} s ({enc[1] / enc[w]:.2f}× vs 1)")
    print(f"({os.cpu_count()} cores; {args.runs} runs each; load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
