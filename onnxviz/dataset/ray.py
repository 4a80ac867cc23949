"""The Ray engine of a dataset pass: the same computation as a Ray Data pipeline (the ``ray`` extra).

>>> for part in run_ray(job, items, batch=32, workers=4, address="ray://head:10001"):   # doctest: +SKIP
...     state = state.merged(part)

The image list (``[(number, path)]``) is read as a dataset; ``map_batches`` runs on an actor
pool of ``workers`` actors, each holding one :class:`~onnxviz.dataset.stream.Scorer` (one
model, one onnxruntime session of one thread per actor CPU); each batch comes back as the
bytes of its :class:`~onnxviz.dataset.state.Part` (per-channel running sums and top-K), which
the caller merges as they arrive. Merging is associative and exact, and every number is
decided per image, so the result is identical to the local engine's (ties broken the same
way: by value, then by image number), whatever order the blocks finish in.

``address``: an existing cluster to join (``ray://host:10001``, ``auto``); without it a local
one is started with ``workers`` CPUs, and shut down at the end. A cluster already started in
this process (``ray.init()``) is used as it is and left running.

Imported only when the Ray engine is asked for: ``import onnxviz`` never imports Ray.

Known limits: on a cluster, the model and the images must be readable at the same paths from
every node (a shared file system), and onnxviz installed there; results are identical only
between machines whose onnxruntime computes the same bits (the same CPU kernels).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import OnnxvizError
from .state import Part
from .stream import Job, Scorer

__all__ = ["run_ray"]


class _Actor:
    """A Ray Data actor: one Scorer, one onnxruntime session of ``threads`` threads."""

    def __init__(self, job: Job, threads: int):
        os.environ["ONNXVIZ_THREADS"] = str(threads)   # read when the session is built
        self.scorer = Scorer(job)

    def __call__(self, batch: dict) -> dict:
        items = list(zip(batch["number"].tolist(), batch["path"].tolist()))
        part = self.scorer.score(items, [self.scorer.decode(path) for _, path in items])
        return {"part": np.array([part.to_bytes()], dtype=object)}


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise OnnxvizError("the Ray engine needs Ray Data: pip install 'onnxviz[ray]' "
                           "(or use --engine local)") from None
    return ray


def run_ray(job: Job, items: list, batch: int, workers: int | None = None, address: str | None = None):
    """The parts of every image in ``items`` (``[(number, path)]``), as the batches finish."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, num_cpus=None if address else (workers or os.cpu_count()),
                     include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     configure_logging=True)
        except Exception as e:  # ConnectionError, RuntimeError, ValueError: Ray's own kinds
            raise OnnxvizError(f"cannot {'join the Ray cluster at ' + repr(address) if address else 'start Ray'}: "
                               f"{' '.join(str(e).split())}") from None
    try:
        for name in ("ray", "ray.data"):  # Ray Data's INFO lines and warnings: the CLI prints its own
            logging.getLogger(name).setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = max(1, min(workers or cpus, cpus))
        rows = [{"number": int(i), "path": p} for i, p in items]
        data = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch, 4 * workers)))
        parts = data.map_batches(_Actor, fn_constructor_kwargs={"job": job, "threads": 1}, batch_size=batch,
                                 compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
                                 batch_format="numpy", max_restarts=0)  # a lost actor fails the pass: --resume
        for row in parts.iter_rows():
            yield Part.from_bytes(row["part"])
    finally:
        if started:
            ray.shutdown()
