"""The errors onnxviz raises: one base class, a few kinds, every message one line.

Every message says what was wrong and what would be valid instead, e.g.
``no layer 'conv9'; layers are: block1_conv1, block1_conv2, …``. The command line turns
any :class:`OnnxvizError` into ``error: <message>`` and exit code 1; the library itself
never prints and never exits.
"""

from __future__ import annotations

__all__ = [
    "OnnxvizError",
    "ModelError",
    "LayerError",
    "ImageError",
    "OutputError",
    "ResourceError",
    "UnsupportedModelError",
    "GradientError",
    "OnnxvizWarning",
]


class OnnxvizError(Exception):
    """Base class of every error onnxviz raises on purpose."""

    def __init__(self, message: str):
        # One line, always: a newline in a message would break the CLI's contract.
        super().__init__(" ".join(str(message).split()))


class ModelError(OnnxvizError):
    """The file is not a usable ONNX model (not ONNX, truncated, no conv layer, …)."""


class UnsupportedModelError(ModelError):
    """A valid model that onnxviz cannot show correctly (and says why)."""


class GradientError(UnsupportedModelError):
    """No gradient graph can be built for this model (an op on the path without a backward
    rule, an opset too old to convert, an unknown element type); forward-only methods still work."""


class LayerError(OnnxvizError, KeyError):
    """A layer that does not exist, or a tensor that cannot be exposed."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class ImageError(OnnxvizError):
    """An image that cannot be decoded or used as input."""


class OutputError(OnnxvizError):
    """An output path that cannot be written."""


class ResourceError(OnnxvizError):
    """A request that would need more memory (or a bigger picture) than its budget allows."""


class OnnxvizWarning(UserWarning):
    """A result was produced, but with a fallback the user should know about."""


def listing(names, limit: int = 20) -> str:
    """``a, b, c`` — or the first ``limit`` names and ``… (N in all)``."""
    names = list(names)
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", … ({len(names)} in all)"


def format_shape(shape) -> str:
    """``(64, 3, 3, 3)`` → ``64×3×3×3``; ``?`` when unknown."""
    return "×".join(str(d) for d in shape) if shape else "?"


def format_bytes(n: int) -> str:
    """``2147483648`` → ``2.0 GiB``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"
