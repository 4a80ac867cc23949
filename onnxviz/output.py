"""Every file onnxviz writes goes through here: atomic, and named safely.

>>> write_atomic("out/maps.png", png_bytes)                               # doctest: +SKIP
>>> layer_paths("out/maps.png", ["block1_conv1", "block2_conv2"])        # doctest: +SKIP
{'block1_conv1': 'out/maps_block1_conv1.png', 'block2_conv2': 'out/maps_block2_conv2.png'}

A file is written to a temporary name in its target folder, flushed, then renamed over the
target, so a reader sees either nothing or the whole file, and a failure leaves nothing.
Names derived from layer names keep only ``[A-Za-z0-9._-]``, so ``../../x`` or ``a/b`` cannot
leave the output folder.
"""

from __future__ import annotations

import os
import re
import tempfile

from .errors import OutputError

__all__ = ["check_target", "write_atomic", "write_all", "layer_paths", "layer_stems", "safe_name"]


def safe_name(name: str) -> str:
    """A file-name-safe form of a layer name: ``layer1.0/conv1`` → ``layer1.0_conv1``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "layer"
    return cleaned[:120]


def check_target(path, *, protect=()) -> str:
    """Check, before any work, that ``path`` can be written; return it as a string."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not path or path.endswith(os.sep) or os.path.isdir(path):
        raise OutputError(f"output '{path}' is a folder; give a file name such as maps.png")
    if not os.path.isdir(folder):
        raise OutputError(f"output folder '{os.path.dirname(path) or '.'}' does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder '{os.path.dirname(path) or '.'}' is not writable")
    try:  # os.access says yes to root everywhere; /sys, read-only mounts and quotas say no
        fd, probe = tempfile.mkstemp(prefix=".onnxviz-", suffix=".tmp", dir=folder)
    except OSError:
        raise OutputError(f"output folder '{os.path.dirname(path) or '.'}' is not writable") from None
    os.close(fd)
    os.unlink(probe)
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    length = len(os.path.basename(path).encode("utf-8", "surrogateescape"))
    if length > name_max:
        raise OutputError(f"output file name '{os.path.basename(path)}' is {length} bytes long; "
                          f"the folder allows at most {name_max}")
    for other in protect:
        if other and os.path.exists(path) and os.path.exists(other) and os.path.samefile(path, other):
            raise OutputError(f"output '{path}' is the input file '{other}'; choose another name")
    return path


def layer_stems(names: list[str]) -> dict[str, str]:
    """``{layer: file stem}``: :func:`safe_name`, and ``_2``, ``_3``, … after names that clean up to
    a stem taken before (``a/b`` and ``a_b``: ``a_b``, ``a_b_2``), in the order given. Give the
    model's whole layer list to get the stems ``onnxviz dataset`` writes and the report reads."""
    stems: dict[str, str] = {}
    for name in dict.fromkeys(names):
        candidate, n = safe_name(name), 1
        while candidate in stems.values():
            n += 1
            candidate = f"{safe_name(name)}_{n}"
        stems[name] = candidate
    return stems


def layer_paths(out, names: list[str]) -> dict[str, str]:
    """``{layer: path}``: ``out`` itself for one layer, ``<stem>_<layer><ext>`` beside it for several."""
    out = os.fspath(out)
    if len(names) == 1:
        return {names[0]: out}
    stem, ext = os.path.splitext(out)
    return {name: f"{stem}_{layer}{ext or '.png'}" for name, layer in layer_stems(names).items()}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _stage(path: str, data: bytes) -> str:
    """``data`` in a fresh temporary file beside ``path``, synced, with the user's umask."""
    fd, tmp = tempfile.mkstemp(prefix=".onnxviz-", suffix=".tmp", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # what open() would have given the file
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_all(files: dict) -> list[str]:
    """Write every ``{path: bytes}``: all to temporary files first, then all renamed into place.

    A failure while writing (disk full, interrupted, unwritable folder) leaves none of the
    files and no temporary file; the targets keep what they had. Only a failure between two
    renames, which move no data, could leave some files new and the rest old.
    """
    staged: list[tuple[str, str]] = []
    path = ""
    try:
        for path, data in files.items():
            path = check_target(path)
            staged.append((_stage(path, data), path))
        for tmp, path in staged:
            os.replace(tmp, path)
    except OSError as e:
        for tmp, _ in staged:
            _unlink(tmp)
        raise OutputError(f"cannot write '{path}': {e.strerror or e}") from None
    except BaseException:
        for tmp, _ in staged:
            _unlink(tmp)
        raise
    return [p for _, p in staged]


def write_atomic(path, data: bytes) -> str:
    """Write ``data`` to ``path`` through a temporary file and a rename (see :func:`write_all`)."""
    return write_all({os.fspath(path): data})[0]
