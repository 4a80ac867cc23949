"""``onnxviz.dataset``: which images, and which of their patches, excite each channel most.

>>> import onnxviz
>>> m = onnxviz.load("models/demo.onnx")
>>> res = onnxviz.dataset(m, "images/", ["block3_conv2"], top=9, out="runs/ds")    # doctest: +SKIP
>>> res["block3_conv2"].top_image[5]          # channel 5's best 9 images, numbers into res.paths   # doctest: +SKIP
array([812,  77, 4051, …])
>>> onnxviz.dataset(m, "images/", ["block3_conv2"], out="runs/ds", resume=True)   # after a Ctrl-C   # doctest: +SKIP

A streaming pass over a folder, a text file of paths or a glob (:mod:`.sources`): batches are
decoded in threads and run through one onnxruntime session for all the layers
(:mod:`.stream`), or on a Ray cluster (:mod:`.ray`, ``engine="ray"``); each batch becomes
per-channel state at once (:mod:`.state`) and its maps are dropped. ``out`` (a folder) gets:

================  ===========================================================================
``index.txt``     one image path a line, in the order they are numbered (``top_image``'s numbers)
``<layer>.npz``   ``count``; ``mean``, ``max``, ``active`` (fraction of positions > 0), each (C,);
                  ``top_value`` (C, K): the channel's max over positions per image, best first;
                  ``top_image`` (C, K); ``top_yx`` (C, K, 2): where in the map that max is
``<layer>.png``   one row per channel (the first ``max_channels``): its top-K receptive-field
                  patches (:mod:`.patches`), labelled with the channel and its best value; an
                  image where the channel is 0 at every position (a ReLU that never fired: ties,
                  ranked by number alone) leaves its cell empty
``skipped.txt``   ``path<TAB>why``, one file a line: what could not be read
================  ===========================================================================

``<layer>`` is the layer name made file-safe (:func:`onnxviz.output.layer_stems`). Every
``checkpoint_every`` images the state is written to ``checkpoint.npz`` (atomically); a Ctrl-C
writes it too and raises :class:`~onnxviz.dataset.state.Interrupted`, saying how to resume;
``resume=True`` continues from it, with the same result as a pass never stopped. The
checkpoint is removed when the pass ends.

Known limits: 2-D conv layers of models with an image input; the receptive fields (and the
patches) are those of :mod:`onnxviz.graph.receptive`; a pass is resumed with the same model,
layers, ``top``, preprocessing and size (the checkpoint says which differs).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile
from dataclasses import dataclass, field

import numpy as np

from ..budget import check_budget
from ..errors import ImageError, LayerError, OnnxvizError, OutputError
from ..features import input_tensor, resolve_preset
from ..output import check_target, layer_stems, write_all, write_atomic
from .sources import list_images
from .state import Interrupted, PassState
from .stream import Job, Scorer, batches, run_local

__all__ = ["dataset", "DatasetLayer", "DatasetResult", "ENGINES", "CHECKPOINT"]

ENGINES = ("local", "ray")
CHECKPOINT = "checkpoint.npz"


@dataclass(frozen=True)
class DatasetLayer:
    """One layer's result (what ``<layer>.npz`` holds), and its receptive field."""

    layer: str
    count: int                # images read
    mean: np.ndarray          # (C,) float32
    max: np.ndarray           # (C,) float32
    active: np.ndarray        # (C,) float32: fraction of positions > 0
    top_value: np.ndarray     # (C, K) float32, best first; −inf in empty slots
    top_image: np.ndarray     # (C, K) int64: numbers into DatasetResult.paths; −1 in empty slots
    top_yx: np.ndarray        # (C, K, 2) int64: where in the map; −1 in empty slots
    field: object = field(default=None, repr=False)   # onnxviz.graph.receptive.Field, or None

    KEYS = ("count", "mean", "max", "active", "top_value", "top_image", "top_yx")

    def arrays(self) -> dict:
        """The arrays of ``<layer>.npz``."""
        return {k: getattr(self, k) for k in self.KEYS}


class DatasetResult(dict):
    """``{layer name: DatasetLayer}``; ``paths``: the numbered images (``index.txt``);
    ``skipped``: ``[(path, why)]``; ``out``: the folder written, or ``None``; ``images``,
    ``seconds``: images this call took (read or skipped) and how long."""

    paths: list
    skipped: list
    out: str | None = None
    images: int = 0
    seconds: float = 0.0


def _check_args(chosen, engine, top, batch, checkpoint_every, max_channels) -> None:
    if engine not in ENGINES:
        raise OnnxvizError(f"unknown engine '{engine}'; engines are: {', '.join(ENGINES)}")
    for name, value in (("top", top), ("batch", batch), ("checkpoint_every", checkpoint_every),
                        ("max_channels", max_channels)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise OnnxvizError(f"{name} must be a whole number, 1 or more, not {value!r}")
    flat = [l.name for l in chosen if l.output_shape is not None and len(l.output_shape) != 3]
    if flat:
        raise LayerError(f"a dataset pass takes 2-D conv layers; {', '.join(flat)} "
                         f"{'is' if len(flat) == 1 else 'are'} not")


def _folder(out: str, resume: bool, protect) -> str:
    """``out`` made (its parent must exist), writable, and fit for a new pass or a resumed one."""
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"output '{out}' is a file; give a folder (it is made if missing)")
    there = os.path.isfile(os.path.join(out, CHECKPOINT))
    if resume and not there:
        raise OutputError(f"'{out}' holds no {CHECKPOINT} to resume from (a finished pass leaves none): "
                          "run without --resume")
    if not resume and there:
        raise OutputError(f"'{out}' holds the checkpoint of an unfinished pass: add --resume to continue it, "
                          f"or delete {os.path.join(out, CHECKPOINT)} to start again")
    if not os.path.isdir(out):
        parent = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(parent):
            raise OutputError(f"cannot make the output folder '{out}': its folder '{parent}' does not exist")
        try:
            os.mkdir(out)
        except OSError as e:
            raise OutputError(f"cannot make the output folder '{out}': {e.strerror or e}") from None
    check_target(os.path.join(out, "index.txt"), protect=protect)
    return out


def _signature(model, source, chosen, top, preset, size, index: bytes) -> dict:
    """What a checkpoint must match to be resumed: the same pass."""
    path = os.path.realpath(model.path)
    st = os.stat(path) if os.path.isfile(path) else None
    if isinstance(source, (list, tuple)):
        source = f"a list of {len(source):,} paths"
    elif os.path.exists(source):
        source = os.path.abspath(source)
    return {"source": str(source), "model": path,
            "model_bytes": st.st_size if st else -1, "model_mtime_ns": st.st_mtime_ns if st else -1,
            "layers": "\n".join(l.name for l in chosen), "top": int(top), "preprocess": preset,
            "size": f"{size[0]}x{size[1]}", "index_sha256": hashlib.sha256(index).hexdigest()}


def _resume(out: str, meta_now: dict) -> PassState:
    path = os.path.join(out, CHECKPOINT)
    try:
        with open(path, "rb") as fh:
            state, meta = PassState.from_bytes(fh.read())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else "not a checkpoint onnxviz wrote"
        raise OutputError(f"cannot resume from '{path}': {why}; delete it to start again") from None
    for key, now in meta_now.items():
        if meta.get(key) != now:
            raise OnnxvizError(f"the checkpoint in '{out}' is of another pass: its {key} is {meta.get(key)!r}, "
                               f"now {now!r}; resume with the same model, SOURCE, layers, top, preprocessing "
                               "and size, or delete it to start again")
    return state


def _index_text(paths: list) -> bytes:
    return "".join(p + "\n" for p in paths).encode("utf-8", "surrogateescape")


def _read_index(out: str) -> tuple[list, bytes]:
    path = os.path.join(out, "index.txt")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise OutputError(f"cannot resume: cannot read '{path}' (the images of the pass): {e.strerror or e}") from None
    return data.decode("utf-8", "surrogateescape").splitlines(), data


def _npz(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _pictures(results: dict, paths: list, size: tuple, max_channels: int, workers) -> dict:
    """``{layer: PNG bytes}``: each layer's top-K patches, one row per channel."""
    from ..render.encode import png_bytes
    from ..render.patches import patches_image
    from .patches import cut_patches

    pngs = {}
    for name, res in results.items():
        channels = min(max_channels, len(res.mean))
        patches, present = cut_patches(res.arrays(), res.field, paths, size, channels, workers or 0)
        present &= res.top_value[:channels] != 0  # 0 everywhere (a ReLU that never fired): no patch excites it
        if res.field is None:
            how = "receptive field unknown: whole images"
        elif res.field.whole:
            how = "receptive field: the whole image"
        else:
            how = f"receptive field {res.field.text()}, jump {'×'.join(map(str, res.field.jump))}"
        title = (f"{name}: top {res.top_value.shape[1]} of {res.count:,} images per channel ({how}); "
                 f"channels 0–{channels - 1} of {len(res.mean)}")
        pngs[name] = png_bytes(patches_image(patches, present, range(channels), res.top_value[:channels, 0], title))
    return pngs


def _checkpoint(out: str, state: PassState, meta: dict) -> None:
    write_atomic(os.path.join(out, CHECKPOINT), state.to_bytes(meta))


def _write(out: str, results: "DatasetResult", stems: dict, size: tuple, max_channels: int, workers) -> None:
    """Every layer's ``.npz`` and ``.png`` and ``skipped.txt``, all at once; then the checkpoint goes."""
    pngs = _pictures(results, results.paths, size, max_channels, workers) if any(
        r.count for r in results.values()) else {}
    files = {}
    for name, res in results.items():
        files[os.path.join(out, stems[name] + ".npz")] = _npz(res.arrays())
        if name in pngs:
            files[os.path.join(out, stems[name] + ".png")] = pngs[name]
    files[os.path.join(out, "skipped.txt")] = "".join(
        f"{path}\t{' '.join(why.split())}\n" for path, why in results.skipped).encode("utf-8", "surrogateescape")
    write_all(files)
    try:
        os.unlink(os.path.join(out, CHECKPOINT))
    except FileNotFoundError:
        pass


def _run(model, job: Job, state: PassState, paths: list, engine: str, batch: int, workers, address,
         out, meta: dict, every: int, progress) -> PassState:
    """Every image not done yet through the engine, merged as its parts come: checkpoints every
    ``every`` images, and on Ctrl-C (then :class:`Interrupted`)."""
    todo = [(int(i), paths[i]) for i in np.flatnonzero(~state.done)]
    if engine == "ray":
        from .ray import run_ray

        parts = run_ray(job, todo, batch, workers, address)
    else:
        parts = run_local(Scorer(job, model), batches(todo, batch), workers or os.cpu_count() or 1)
    saved = state.seen
    try:
        if progress is not None:
            progress(state.seen, len(paths))
        for part in parts:
            state = state.merged(part)  # one assignment: an interrupt leaves the old state or the new one
            if out is not None and state.seen - saved >= every:
                _checkpoint(out, state, meta)
                saved = state.seen
            if progress is not None:
                progress(state.seen, len(paths))
    except KeyboardInterrupt:
        parts.close()
        if out is None:
            raise
        _checkpoint(out, state, meta)
        raise Interrupted(f"interrupted after {state.seen:,} of {len(paths):,} images; the checkpoint is in "
                          f"'{out}': run the same command with --resume to go on") from None
    finally:
        parts.close()
    return state


def _model_input(model, preset: str, size) -> tuple:
    """``(H, W)`` and the input shape of one batch's first image, checked by making one."""
    inp = model.input
    if inp is None or len(inp.shape) != 4:
        raise ImageError(f"a dataset pass feeds images, and the model input {repr(inp.name) if inp else '(none)'} "
                         "does not take them (a rank-4 input does)")
    x = input_tensor(model, np.zeros((8, 8, 3), np.uint8), preprocess=preset, size=size)
    hw = tuple(x.shape[1:3]) if inp.layout == "NHWC" else tuple(x.shape[2:4])
    return hw, x.shape[1:]


def dataset(model, source, layers, top: int = 9, engine: str = "local", *, out=None, batch: int = 32,
            workers: int | None = None, resume: bool = False, checkpoint_every: int = 1000,
            max_channels: int = 32, preprocess=None, size=None, address: str | None = None,
            max_bytes=None, progress=None) -> DatasetResult:
    """Which images of ``source`` excite each channel of ``layers`` most (see the module docstring).

    ``model``: a :class:`~onnxviz.Model` or a path; ``source``: a folder, a text file of image
    paths, a glob, or a list of paths; ``layers``: as :meth:`~onnxviz.Model.select` takes them; ``top``: K.
    ``engine``: ``local`` (``workers`` decoding threads, default every core) or ``ray``
    (``workers`` actors, default every CPU of the cluster; ``address`` joins one).
    ``out``: the folder to write (``None``: nothing written, no checkpoint); ``batch``: images
    a run; ``checkpoint_every``: images between checkpoints; ``max_channels``: rows of each
    ``<layer>.png``; ``preprocess``, ``size``, ``max_bytes``: as :func:`onnxviz.features.feature_maps`
    (the budget is checked once, for one batch); ``progress``: ``callback(done, total)``, images.
    """
    from ..model import Model, load

    model = model if isinstance(model, Model) else load(model)
    chosen = model.select(layers)
    _check_args(chosen, engine, top, batch, checkpoint_every, max_channels)
    if engine == "ray" and not os.path.isfile(model.path):
        raise OnnxvizError("the Ray engine has every worker open the model from its file; this model has none "
                           f"('{model.path}'): save it first")
    preset = resolve_preset(model, preprocess)
    hw, one = _model_input(model, preset, size)
    check_budget(model, [l.tensor for l in chosen], (batch, *one), max_bytes, images=True)
    if not resume:  # before the output folder is made: a bad SOURCE leaves nothing behind
        paths, rejected = list_images(source)
        index = _index_text(paths)
    if out is not None:
        out = _folder(out, resume, model.files())
    if resume:
        paths, index = _read_index(out)
    meta = _signature(model, source if isinstance(source, (list, tuple)) else os.fspath(source), chosen, top, preset,
                      hw, index)
    if resume:
        state = _resume(out, meta)
    else:
        state = PassState({}, len(paths), rejected)
        if out is not None:
            write_atomic(os.path.join(out, "index.txt"), index)
    started, before = time.perf_counter(), state.seen
    job = Job(os.path.realpath(model.path), tuple(l.name for l in chosen), preset, hw, int(top))
    state = _run(model, job, state, paths, engine, batch, workers, address, out, meta, checkpoint_every, progress)
    results = DatasetResult()
    for layer in chosen:
        arrays = state.layers[layer.name].result() if layer.name in state.layers else None
        if arrays is not None:
            results[layer.name] = DatasetLayer(layer.name, field=model.receptive_field(layer, hw),
                                               **{k: arrays[k] for k in DatasetLayer.KEYS})
    results.paths, results.out = paths, out
    results.skipped = [(paths[i], why) for i, why in sorted(state.skipped.items())] + state.rejected
    results.images, results.seconds = state.seen - before, time.perf_counter() - started
    if not results:
        if out is not None:
            _write(out, results, {}, hw, max_channels, workers)
        raise ImageError(f"none of the {len(paths):,} images could be read (see skipped.txt); the first: "
                         f"{results.skipped[0][1]}")
    if out is not None:
        _write(out, results, layer_stems([l.name for l in model.layers]), hw, max_channels, workers)
    return results
