"""Benchmark `onnxviz dataset` (issue 13): throughput against a plain onnxruntime loop, peak RSS
at 500 and 10,000 images, and the Ray engine on 2 local workers against the local engine.

Images: the demo generator's shapes at 96×96 (JPEG, quality 90; ``make_dataset_images.py``),
made once into ``--dir`` (resized to the model's size by every side).

* throughput: ``onnxviz.dataset`` (local engine, batch 32, nothing written) against a plain
  loop over the same pruned sub-graph (``onnx.utils.Extractor``, a default onnxruntime session):
  decode with Pillow, resize, normalise, stack, ``session.run``, one batch after another, at
  its best batch (tried: 1, 8, 16, 32, 64, 128, on 1,000 images, before the rounds). Also the
  plain loop's ceiling: ``session.run`` alone on tensors decoded beforehand. Two models: the
  demo model (64×64, layers block2_conv2 + block3_conv2: decoding matters) and the onnx
  wheel's SqueezeNet (224×224, fixed batch 1, fire9/expand3x3: onnxruntime matters).
* memory: peak RSS of ``onnxviz dataset … -q`` as a child process (``os.wait4``) over the
  first 500 and over all 10,000 images (measured first: a child's ``ru_maxrss`` counts the
  pages of this process at the fork).
* Ray: ``engine="ray", workers=2`` on a local cluster of 2 CPUs started once (its start
  timed apart; each pass still starts its actors, which load the model), against the local
  engine, over all the images; the results are checked to be identical.

Sides alternate (A B A B …) and the medians are printed side by side with their ratio.
Hold /work/bench.lock: ``flock /work/bench.lock python scripts/bench_dataset.py``.

    python scripts/bench_dataset.py [--images 10000] [--rounds 3] [--dir /tmp/onnxviz-bench-dataset]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

DEMO = os.path.join(ROOT, "models", "demo.onnx")
DEMO_LAYERS = ["block2_conv2", "block3_conv2"]


def images(folder: str, n: int) -> list[str]:
    """``n`` demo-generator images of 96×96 as JPEG in ``folder``, made once (kept between runs)."""
    from make_dataset_images import make_images

    done = os.path.join(folder, f"made-{n}")
    if not os.path.exists(done):
        make_images(folder, shapes=n, photos=0, broken=False, size=96, jpeg=True)
        open(done, "w").close()
    from onnxviz.dataset.sources import list_images

    return list_images(os.path.join(folder, "shapes"))[0]


def listing(paths: list, folder: str, name: str) -> str:
    path = os.path.join(folder, name)
    with open(path, "w") as fh:
        fh.write("".join(p + "\n" for p in paths))
    return path


class Plain:
    """The plain loop: the same pruned sub-graph in a default session; Pillow decoding."""

    def __init__(self, model_path: str, layers: list, size: tuple, layout: str, scale: float):
        import onnx
        import onnx.utils
        import onnxruntime as ort

        import onnxviz

        m = onnxviz.load(model_path)
        self.tensors = [m.layer(l).tensor for l in layers]
        self.input = m.input.name
        proto = onnx.shape_inference.infer_shapes(onnx.load(model_path))
        sub = onnx.utils.Extractor(proto).extract_model([self.input], self.tensors)
        self.sess = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
        fixed = m.input.shape[0]
        self.fixed = fixed if isinstance(fixed, int) and fixed > 0 else 0
        self.size, self.layout, self.scale = size, layout, scale

    def decode(self, path: str) -> np.ndarray:
        from PIL import Image

        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((self.size[1], self.size[0]), Image.BILINEAR)
        return np.asarray(rgb, np.float32) * self.scale

    def tensor(self, arrays: list) -> np.ndarray:
        x = np.stack(arrays)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.layout == "NCHW" else x)

    def run(self, paths: list, batch: int) -> None:
        for start in range(0, len(paths), batch):
            self.sess.run(self.tensors, {self.input: self.tensor([self.decode(p) for p in paths[start:start + batch]])})

    def ceiling(self, tensors: list) -> None:
        for x in tensors:
            self.sess.run(self.tensors, {self.input: x})


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def throughput(label, model, layers, paths, plain: Plain, rounds, preprocess=None):
    import onnxviz

    batches = [1] if plain.fixed == 1 else [1, 8, 16, 32, 64, 128]
    trial = paths[:min(1000, len(paths))]
    rates = {b: len(trial) / timed(lambda b=b: plain.run(trial, b)) for b in batches}
    best = max(rates, key=rates.get)
    step = plain.fixed or best
    decoded = [plain.tensor([plain.decode(p) for p in paths[s:s + step]]) for s in range(0, len(paths), step)]
    m = onnxviz.load(model)
    sides = {"onnxviz dataset (local, batch 32)": lambda: onnxviz.dataset(m, paths, layers, preprocess=preprocess,
                                                                         batch=32),
             f"plain loop (batch {best})": lambda: plain.run(paths, best),
             "plain session.run only (decoded before)": lambda: plain.ceiling(decoded)}
    times = {k: [] for k in sides}
    for _ in range(rounds):
        for k, fn in sides.items():
            times[k].append(timed(fn))
    rate = {k: len(paths) / statistics.median(v) for k, v in times.items()}
    names = list(sides)
    print(f"\n{label}: {len(paths):,} images, {rounds} rounds (best plain batch {best}; tried "
          + ", ".join(f"{b}: {r:.0f}/s" for b, r in rates.items()) + ")")
    for k in names:
        print(f"  {k:44s} {rate[k]:8.1f} images/s   rounds: " + " ".join(f"{len(paths) / t:.0f}" for t in times[k]))
    print(f"  ratio onnxviz / plain loop = {rate[names[0]] / rate[names[1]]:.2f}  (target >= 0.9)")
    print(f"  ratio onnxviz / session.run only = {rate[names[0]] / rate[names[2]]:.2f}")


def memory(paths: list, folder: str, rounds: int):
    from bench_cli import measure

    small, large = listing(paths[:500], folder, "first500.txt"), listing(paths, folder, "all.txt")
    peaks = {500: [], len(paths): []}
    for _ in range(rounds):
        for n, src in ((500, small), (len(paths), large)):
            out = tempfile.mkdtemp(prefix="bench-ds-")
            layers = [a for layer in DEMO_LAYERS for a in ("--layer", layer)]
            cmd = [sys.executable, "-m", "onnxviz", "dataset", DEMO, src, *layers, "-q", "-o", out]
            wall, rss = measure(cmd)
            peaks[n].append((wall, rss))
    print(f"\nPeak RSS of `onnxviz dataset` (demo model, {', '.join(DEMO_LAYERS)}), {rounds} rounds:")
    med = {}
    for n, runs in peaks.items():
        med[n] = statistics.median(r for _, r in runs)
        print(f"  {n:6,d} images: {med[n]:7.1f} MB   ({statistics.median(w for w, _ in runs):.1f} s)   rounds: "
              + " ".join(f"{r:.1f}" for _, r in runs))
    print(f"  ratio {len(paths):,} / 500 = {med[len(paths)] / med[500]:.3f}  (target <= 1.1)")


def ray_vs_local(paths: list, rounds: int):
    import ray

    import onnxviz

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": ROOT}})
    started = time.perf_counter() - start
    try:
        m = onnxviz.load(DEMO)
        results = {}
        sides = {"local engine": lambda: results.__setitem__("local", onnxviz.dataset(m, paths, DEMO_LAYERS)),
                 "ray engine, 2 workers": lambda: results.__setitem__("ray", onnxviz.dataset(
                     m, paths, DEMO_LAYERS, engine="ray", workers=2))}
        times = {k: [] for k in sides}
        for _ in range(rounds):
            for k, fn in sides.items():
                times[k].append(timed(fn))
        for name in DEMO_LAYERS:
            for key, value in results["local"][name].arrays().items():
                assert np.array_equal(value, results["ray"][name].arrays()[key]), (name, key)
    finally:
        ray.shutdown()
    rate = {k: len(paths) / statistics.median(v) for k, v in times.items()}
    print(f"\nRay engine vs local (demo model, {len(paths):,} images, {rounds} rounds; results identical; "
          f"local cluster of 2 CPUs started once in {started:.1f} s, not counted):")
    for k in sides:
        print(f"  {k:24s} {rate[k]:8.1f} images/s   rounds: " + " ".join(f"{len(paths) / t:.0f}" for t in times[k]))
    print(f"  ratio ray / local = {rate['ray engine, 2 workers'] / rate['local engine']:.2f}  (target >= 0.8)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "onnxviz-bench-dataset"))
    p.add_argument("--only", choices=("throughput", "memory", "ray"), action="append")
    args = p.parse_args(argv)
    import onnx

    begin = time.perf_counter()
    print(f"run {time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    paths = images(args.dir, args.images)
    only = args.only or ["throughput", "memory", "ray"]
    if "memory" in only:  # first: a child's ru_maxrss counts this process's pages at the fork
        memory(paths, args.dir, max(2, args.rounds - 1))
    if "throughput" in only:
        throughput("demo model, 64×64 (block2_conv2 + block3_conv2)", DEMO, DEMO_LAYERS, paths[:3000],
                   Plain(DEMO, DEMO_LAYERS, (64, 64), "NHWC", 1 / 255), args.rounds)
        squeeze = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                               "light_squeezenet.onnx")
        throughput("SqueezeNet (onnx wheel), 224×224, fixed batch 1 (fire9/expand3x3)", squeeze, ["fire9/expand3x3"],
                   paths[:400], Plain(squeeze, ["fire9/expand3x3"], (224, 224), "NCHW", 1.0), args.rounds,
                   preprocess="raw")
    if "ray" in only:
        ray_vs_local(paths, args.rounds)
    print(f"\n{(time.perf_counter() - begin) / 60:.1f} min; load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
