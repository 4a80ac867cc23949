"""The local engine of a dataset pass: batches decoded in a thread pool while the one before
runs through onnxruntime, each turned into a :class:`~onnxviz.dataset.state.Part` at once.

>>> scorer = Scorer(Job("models/demo.onnx", ("block3_conv2",), "unit", (64, 64), 9))   # doctest: +SKIP
>>> for part in run_local(scorer, batches([(0, "a.png"), (1, "b.png")], 32), workers=2):  # doctest: +SKIP
...     state = state.merged(part)

One session computes every requested layer of a batch (``feature_maps`` with a ready input
tensor: one pruned sub-graph). The maps of a batch are reduced to per-image, per-channel
numbers (:func:`~onnxviz.dataset.state.layer_part`) and dropped before the next batch runs,
so memory stays flat whatever the number of images: at most two batches of decoded images
and one batch's maps are held at once.

An image that cannot be decoded (corrupt, empty, truncated, over Pillow's decompression-bomb
limit, not an image) is skipped with the reason, and the batch goes on with the others.
:class:`Scorer` is also what each Ray actor holds (:mod:`onnxviz.dataset.ray`).

Known limits: decoding is Pillow's, in threads (it releases the GIL); a model input of a
fixed batch size is run in chunks of that size (:func:`onnxviz.features.run_tensors`).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .. import preprocess as prep
from ..errors import ImageError, OnnxvizError
from ..features import feature_maps, input_tensor
from .state import Part, layer_part

__all__ = ["Job", "Scorer", "batches", "run_local"]


@dataclass(frozen=True)
class Job:
    """What scoring a batch needs, as plain data (a Ray worker rebuilds its :class:`Scorer` from it)."""

    model_path: str
    layers: tuple          # friendly layer names
    preset: str            # the preprocessing preset, resolved
    size: tuple            # (H, W): the images' size as the model sees them
    top: int


class Scorer:
    """One model (and its cached onnxruntime session): decodes images and scores batches.

    Its session's idle threads sleep (``spin=False``) so that decoding the next batch gets the
    cores between runs, unless the model takes one image a run (a fixed batch of 1): then
    every run is short, and waking the threads for each of its ops costs more than decoding
    gains (the onnx wheel's SqueezeNet, 400 images, quiet machine: 154 images/s sleeping, 180
    spinning; the plain loop 163-193). It keeps onnxruntime's memory arena: every run has the
    same shapes, so the arena is reused, where without it the C allocator keeps what the runs freed, in
    steps (demo model, 3,000 images: 131.5-132.2 MB peak RSS in three passes with it,
    137.8-151.6 MB without, in steps at 512-1,536 images). ``threads``: its intra-op threads
    (0: every core). ``model``: an opened model to take the graph from (its own sessions and
    options are left alone), else the job's file is opened.
    """

    def __init__(self, job: Job, model=None, threads: int = 0):
        from ..model import Model, load

        self.job = job
        self.model = Model(model.proto, model.path, model.base_dir) if model is not None else load(job.model_path)
        batch = self.model.input.shape[0] if self.model.input and self.model.input.shape else None
        self.model.session_options = {"threads": threads, "spin": batch == 1, "arena": True}
        self.layers = self.model.select(list(job.layers))
        probe = input_tensor(self.model, np.zeros((8, 8, 3), np.uint8), preprocess=job.preset, size=job.size)
        layout = self.model.input.layout
        self.form = {"layout": layout, "preset": job.preset, "dtype": probe.dtype,
                     "channels": probe.shape[3] if layout == "NHWC" else probe.shape[1]}

    def decode(self, path: str):
        """One image at the model's size (:func:`onnxviz.preprocess.decode`), or why it cannot be
        (a string)."""
        try:
            return prep.decode(path, self.job.size)
        except ImageError as e:
            return str(e)
        except OnnxvizError:  # the model's limit (its input takes no images), not the image's
            raise
        except MemoryError:
            return f"image '{path}' is too large to decode in the memory left"
        except Exception as e:  # Pillow's decoders raise more than OSError on broken files (struct.error, …)
            return f"image '{path}' cannot be decoded: {type(e).__name__}: {e}"

    def score(self, items: list, decoded: list) -> Part:
        """The part of the images ``items`` (``[(number, path)]``) given their :meth:`decode`\\ s."""
        good = [(i, x) for (i, _), x in zip(items, decoded) if not isinstance(x, str)]
        skipped = {i: x for (i, _), x in zip(items, decoded) if isinstance(x, str)}
        layers = {}
        if good:
            x = prep.batch_tensor([x for _, x in good], **self.form)  # as input_tensor makes it, image by image
            numbers = np.array([i for i, _ in good], np.int64)
            maps = feature_maps(self.model, x, self.layers, max_bytes="off")  # checked once, before the pass
            for name in list(maps):
                layers[name] = layer_part(maps.pop(name), numbers, self.job.top)
        return Part([i for i, _ in items], layers, skipped)


def batches(items: list, size: int):
    """``items`` in runs of ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def run_local(scorer: Scorer, runs, workers: int):
    """The parts of every batch in ``runs`` (lists of ``(number, path)``), in order: the next
    batch is decoded by ``workers`` threads while this one runs. Closing the generator (an
    interrupt) drops what is still queued."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="onnxviz-decode")
    pending: deque = deque()
    try:
        for items in runs:
            pending.append((items, [pool.submit(scorer.decode, path) for _, path in items]))
            if len(pending) > 1:
                items, futures = pending.popleft()
                yield scorer.score(items, [f.result() for f in futures])
        while pending:
            items, futures = pending.popleft()
            yield scorer.score(items, [f.result() for f in futures])
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
