"""Read an ONNX file's graph without reading its weight bytes.

``onnx.load`` parses every initializer's ``raw_data`` into memory: 528 MB for VGG16 before
anything is drawn. Here the protobuf wire format is walked over a memory map instead: every
field is copied except the ``raw_data`` of the main graph's large initializers, which are
*skipped* and turned into external-data references into the very same file
(``location=<file name>, offset, length``). The result is an ordinary, valid ``ModelProto``
of a few kilobytes; onnxruntime and :mod:`onnxviz.weights` read the skipped bytes from the
file only when (and only as far as) a tensor is needed.

Known limits: initializers of subgraphs (If/Loop bodies) and typed fields (``float_data``)
stay inline, as do tensors under :data:`INLINE_LIMIT` bytes.
"""

from __future__ import annotations

import mmap
import os
import stat

import onnx
from google.protobuf.message import DecodeError

from ..errors import ModelError

INLINE_LIMIT = 4096  # smaller raw_data stays in the proto

# Field numbers from onnx.proto3
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_RAW_DATA = 9


class _Truncated(Exception):
    pass


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Truncated
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise _Truncated


def encode_varint(value: int) -> bytes:
    """Protobuf base-128 varint (also used by scripts/keras_export.py to stream tensors)."""
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf, start: int, end: int):
    """Yield ``(field, wire_type, field_start, value_start, value_end)``."""
    pos = start
    while pos < end:
        field_start = pos
        tag, pos = _varint(buf, pos, end)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise _Truncated
        if wire == 0:
            _, vend = _varint(buf, pos, end)
        elif wire == 1:
            vend = pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            vend = pos + length
        elif wire == 5:
            vend = pos + 4
        else:  # groups (3, 4) are not used by ONNX
            raise _Truncated
        if vend > end:
            raise _Truncated
        yield field, wire, field_start, pos, vend
        pos = vend


def _strip_tensor(buf, start, end, skipped: list, index: int) -> bytes:
    parts = []
    for field, wire, fstart, vstart, vend in _fields(buf, start, end):
        if field == _TENSOR_RAW_DATA and wire == 2 and vend - vstart >= INLINE_LIMIT:
            skipped.append((index, vstart, vend - vstart))
        else:
            parts.append(buf[fstart:vend])
    return b"".join(parts)


def _strip_graph(buf, start, end, skipped: list, counter: list) -> bytes:
    parts = []
    for field, wire, fstart, vstart, vend in _fields(buf, start, end):
        if field == _GRAPH_INITIALIZER and wire == 2:
            body = _strip_tensor(buf, vstart, vend, skipped, counter[0])
            counter[0] += 1
            parts.append(encode_varint((_GRAPH_INITIALIZER << 3) | 2))
            parts.append(encode_varint(len(body)))
            parts.append(body)
        else:
            parts.append(buf[fstart:vend])
    return b"".join(parts)


def _strip_model(buf, size: int) -> tuple[bytes, list]:
    skipped: list = []
    counter = [0]
    parts = []
    for field, wire, fstart, vstart, vend in _fields(buf, 0, size):
        if field == _MODEL_GRAPH and wire == 2:
            body = _strip_graph(buf, vstart, vend, skipped, counter)
            parts.append(encode_varint((_MODEL_GRAPH << 3) | 2))
            parts.append(encode_varint(len(body)))
            parts.append(body)
        else:
            parts.append(buf[fstart:vend])
    return b"".join(parts), skipped


def _bad_text(message, where: str = "model"):
    """The first string field of ``message`` that is not valid UTF-8, as ``(field path, bytes)``.

    The protobuf runtime hands such a field out as ``bytes`` instead of ``str`` (ONNX's
    proto2 strings are not checked when parsed); names like that break every later step
    and onnxruntime's own error messages.
    """
    for field, value in message.ListFields():
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        if field.type == field.TYPE_STRING:
            for text in (value if repeated else [value]):
                if not isinstance(text, str):
                    return f"{where}.{field.name}", text
        elif field.type == field.TYPE_MESSAGE:
            for k, item in enumerate(value if repeated else [value]):
                found = _bad_text(item, f"{where}.{field.name}" + (f"[{k}]" if repeated else ""))
                if found:
                    return found
    return None


def read_model(path: str) -> onnx.ModelProto:
    """Parse ``path`` into a ``ModelProto`` whose large inline weights point back into the file.

    >>> m = read_model("models/vgg16.onnx")       # doctest: +SKIP
    >>> m.graph.initializer[0].data_location == onnx.TensorProto.EXTERNAL   # doctest: +SKIP
    True

    Raises :class:`ModelError` for a missing, empty, truncated or non-ONNX file.
    """
    shown = os.fspath(path)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(info.st_mode):  # a pipe would block the open, a device never end
            raise ModelError(f"'{shown}' is not a regular file (a device, pipe or socket), not an ONNX model")
        size = info.st_size
        f = open(path, "rb")
    except IsADirectoryError:
        raise ModelError(f"'{shown}' is a folder, not an ONNX model file") from None
    except FileNotFoundError:
        raise ModelError(f"model file '{shown}' does not exist") from None
    except OSError as e:
        raise ModelError(f"cannot read model '{shown}': {e.strerror or e}") from None
    with f:
        if size == 0:
            raise ModelError(f"'{shown}' is empty (0 bytes), not an ONNX model")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                data, skipped = _strip_model(buf, size)
            except _Truncated:
                raise ModelError(
                    f"'{shown}' is not an ONNX model, or is truncated: its protobuf encoding "
                    f"breaks off inside {size} bytes"
                ) from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ModelError(f"'{shown}' is not an ONNX model: its protobuf fields do not decode as an onnx "
                         "ModelProto (a tensor, graph or other message saved on its own?)") from None
    bad = _bad_text(model)
    if bad:
        raise ModelError(f"'{shown}' is not a valid ONNX model: the text of {bad[0]} is not UTF-8 "
                         f"({bytes(bad[1][:40])!r})")
    location = os.path.basename(os.path.realpath(shown))  # beside the real file (see Model.base_dir)
    for index, offset, length in skipped:
        tensor = model.graph.initializer[index]
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return model
