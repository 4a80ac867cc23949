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

An error onnxviz raises in a worker (an image folder the node cannot see, a model it cannot
open) comes back as that error; Ray's own failures as one ``the Ray engine failed: …`` line.

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
import warnings

import numpy as np

from .. import errors
from ..errors import OnnxvizError
from .state import Part
from .stream import Job, Scorer, batches

__all__ = ["run_ray"]

#: Batches an actor call takes (and merges into one part): fewer calls and parts to send. Measured
#: on 4,000 demo-model images, 2 actors: 474 images/s taking 1, 529 taking 4.
_RUNS = 4


class _Actor:
    """A Ray Data actor: one Scorer (one onnxruntime session of ``threads`` threads). A call
    takes ``runs`` batches and sends back one part, their merge. Made per pass by
    :func:`_actor_class`, the job a class attribute (no constructor argument in the object store)."""

    job: Job
    threads: int
    runs: int

    def __init__(self):
        self.scorer = None  # made by the first call, where an error can be sent back (see __call__)

    def __call__(self, rows: dict) -> dict:
        """``{"part": [bytes], "error": [""]}``; an OnnxvizError is sent back as ``"Kind\tmessage"``
        (Ray keeps only the text of what a worker raises)."""
        try:
            if self.scorer is None:
                self.scorer = Scorer(self.job, threads=self.threads)
            items = list(zip(rows["number"].tolist(), rows["path"].tolist()))
            part = None
            for run in batches(items, -(-len(items) // self.runs)):
                one = self.scorer.score(run, [self.scorer.decode(path) for _, path in run])
                part = one if part is None else part.merged(one)
            return {"part": np.array([part.to_bytes()], dtype=object), "error": np.array([""])}
        except OnnxvizError as e:
            return {"part": np.array([b""], dtype=object), "error": np.array([f"{type(e).__name__}\t{e}"])}


def _actor_class(job: Job, threads: int, runs: int) -> type:
    return type("OnnxvizScorer", (_Actor,), {"job": job, "threads": threads, "runs": runs})


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
    loggers = {name: logging.getLogger(name) for name in ("ray", "ray.data")}
    levels = {name: logger.level for name, logger in loggers.items()}
    context = ray.data.DataContext.get_current()
    settings = {k: getattr(context, k) for k in ("enable_progress_bars", "print_on_execution_start")}
    try:
        for logger in loggers.values():  # Ray Data's lines and bars: the caller shows its own, and errors
            logger.setLevel(logging.CRITICAL)
        for k in settings:
            setattr(context, k, False)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = max(1, min(workers or cpus, cpus))
        rows = [{"number": int(i), "path": p} for i, p in items]
        data = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch, 4 * workers)))
        with warnings.catch_warnings():
            # max_restarts=0: a lost actor fails the pass (which --resume continues) rather than being
            # restarted; Ray 2.60 takes it only among its deprecated **ray_remote_args (and its default,
            # endless restarts, has the driver log an error line for every actor made).
            warnings.simplefilter("ignore", DeprecationWarning)
            parts = data.map_batches(_actor_class(job, 1, _RUNS), batch_size=batch * _RUNS, num_cpus=1,
                                     compute=ray.data.ActorPoolStrategy(size=workers), batch_format="numpy",
                                     max_restarts=0)
        for row in parts.iter_rows():
            if row["error"]:
                kind, _, message = str(row["error"]).partition("\t")
                cls = getattr(errors, kind, None)
                raise (cls if isinstance(cls, type) and issubclass(cls, OnnxvizError) else OnnxvizError)(message)
            yield Part.from_bytes(row["part"])
    except OnnxvizError:
        raise
    except Exception as e:  # Ray's own failures (a worker lost, …), or a bug: one line, the checkpoint stays
        lines = str(e).strip().splitlines()
        raise OnnxvizError(f"the Ray engine failed: {type(e).__name__}: {lines[0] if lines else ''}") from None
    finally:
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
        for k, v in settings.items():
            setattr(context, k, v)
        if started:
            ray.shutdown()
