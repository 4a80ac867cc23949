"""Images to input tensors: decode, convert to RGB, resize, normalise, lay out.

>>> x = to_tensor(["cat.jpg", "dog.png"], size=(224, 224), layout="NCHW", preset="caffe")  # doctest: +SKIP
>>> x.shape, x.dtype                                                                   # doctest: +SKIP
((2, 3, 224, 224), dtype('float32'))

Presets (applied to RGB pixel values 0–255):

=========  =================================================================
``caffe``  RGB → BGR, minus the ImageNet mean [103.939, 116.779, 123.68] (Keras VGG16, ResNet50)
``torch``  ÷ 255, minus mean [0.485, 0.456, 0.406], ÷ std [0.229, 0.224, 0.225]
``tf``     ÷ 127.5 − 1 (Keras MobileNet, Inception)
``unit``   ÷ 255
``raw``    as is, 0–255
=========  =================================================================

Decoding is Pillow's: the first frame of an animation, EXIF orientation applied; grey,
palette, RGBA (alpha dropped), CMYK and 16-bit images become 8-bit-range RGB. Resizing is
bilinear (antialiased when shrinking). Arrays are taken as pixel values 0–255, ``H×W`` or
``H×W×C`` with C in 1, 3, 4. Images smaller than :data:`MIN_SIDE` pixels a side, and images
over Pillow's decompression-bomb limit, are refused with :class:`ImageError`. Images are
made for inputs of 3 channels (RGB) or 1 (grey); other counts are refused with
:class:`UnsupportedModelError` (a limit of onnxviz for that model: feed it a ready tensor).
"""

from __future__ import annotations

import os
import re
import stat

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, UnsupportedModelError

__all__ = ["PRESETS", "MIN_SIDE", "load_image", "decode", "to_tensor", "batch_tensor", "apply_preset"]

PRESETS = ("caffe", "torch", "tf", "unit", "raw")
MIN_SIDE = 8

_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _describe(src) -> str:
    if isinstance(src, (str, os.PathLike)):
        return f"'{os.fspath(src)}'"
    if isinstance(src, np.ndarray):
        return f"array {src.shape}"
    return type(src).__name__


def _open(path) -> Image.Image:
    shown = os.fspath(path)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"image '{shown}' is a folder, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"image '{shown}' is not a regular file (a device, pipe or socket)")
        if info.st_size == 0:
            raise ImageError(f"image '{shown}' is empty (0 bytes)")
    except FileNotFoundError:
        raise ImageError(f"image file '{shown}' does not exist") from None
    except OSError as e:
        raise ImageError(f"cannot read image '{shown}': {e.strerror or e}") from None
    try:
        img = Image.open(path)  # the header only: the size is known before any pixel is decoded
    except Image.DecompressionBombError as e:  # Pillow's own refusal, from twice its limit
        nums = re.findall(r"\d+", str(e))
        raise ImageError(_bomb(shown, int(nums[0]) if nums else None)) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"'{shown}' is not an image Pillow can decode (JPEG, PNG, BMP, GIF, TIFF, WebP, …)"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"image '{shown}' is truncated or corrupt: {e}") from None
    # Checked here, not by turning Pillow's warning into an error: warnings.catch_warnings is
    # not thread-safe, and onnxviz dataset decodes images in threads.
    if Image.MAX_IMAGE_PIXELS and img.width * img.height > Image.MAX_IMAGE_PIXELS:
        img.close()
        raise ImageError(_bomb(shown, img.width * img.height))
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"image '{shown}' is truncated or corrupt: {e}") from None
    return img


def _bomb(shown: str, pixels: int | None) -> str:
    count = f"{pixels:,} pixels" if pixels else "too many pixels"
    return (f"image '{shown}' has {count}, over Pillow's decompression-bomb limit of "
            f"{Image.MAX_IMAGE_PIXELS:,}; refused (shrink it first)")


def _upright(img: Image.Image) -> Image.Image:
    """``img`` with its EXIF orientation applied; ``img`` itself when it has none (no copy)."""
    if img.getexif().get(0x0112, 1) in (None, 1):
        return img
    return ImageOps.exif_transpose(img)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """An upright PIL image as an RGB array (uint8, or float32 from 16-bit and float modes)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float32)
        if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0  # 16-bit range → 0..255
        return np.repeat(arr[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def _check_side(src, w: int, h: int) -> None:
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ImageError(
            f"image {_describe(src)} is {w}×{h} pixels; onnxviz needs at least "
            f"{MIN_SIDE}×{MIN_SIDE}"
        )


def load_image(src) -> np.ndarray:
    """An RGB ``H×W×3`` array (uint8 or float32, values 0–255) from a path, PIL image or array."""
    if isinstance(src, (str, os.PathLike)):
        arr = _pil_to_array(_upright(_open(src)))
    elif isinstance(src, Image.Image):
        arr = _pil_to_array(_upright(src))
    elif isinstance(src, np.ndarray):
        arr = src
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ImageError(
                f"image array has shape {src.shape}; expected H×W or H×W×C with C in 1, 3, 4"
            )
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ImageError(f"image array has dtype {arr.dtype}; expected integers or floats")
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        arr = arr[:, :, :3]
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise ImageError("image array has NaN or infinite values")
    else:
        raise ImageError(
            f"cannot use a {type(src).__name__} as an image; give a file path, a PIL image "
            "or a numpy array"
        )
    _check_side(src, arr.shape[1], arr.shape[0])
    return arr


def decode(src, size: tuple) -> np.ndarray:
    """One image (path, PIL image or array) as float32 ``H×W×3`` at ``size`` ``(H, W)``, RGB,
    values 0–255, before any preset: what :func:`to_tensor` stacks. Safe in several threads.

    An 8-bit RGB picture is resized as a PIL image, with no array copy on the way (a dataset
    pass of 96×96 JPEGs: 0.35-0.40 ms an image, 0.44-0.57 ms through :func:`load_image`);
    the pixels are the same.
    """
    if isinstance(src, (str, os.PathLike, Image.Image)):
        img = _upright(src if isinstance(src, Image.Image) else _open(src))
        if img.mode == "RGB":
            _check_side(src, img.width, img.height)
            h, w = size
            return np.asarray(img if img.size == (w, h) else img.resize((w, h), Image.BILINEAR), dtype=np.float32)
        arr = _pil_to_array(img)
        _check_side(src, arr.shape[1], arr.shape[0])
        return _resize(arr, size)
    return _resize(load_image(src), size)


def _resize(arr: np.ndarray, size: tuple) -> np.ndarray:
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return np.asarray(Image.fromarray(arr).resize((w, h), Image.BILINEAR), dtype=np.float32)
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(arr[:, :, c], dtype=np.float32), "F")
                        .resize((w, h), Image.BILINEAR)) for c in range(arr.shape[2])]
    return np.stack(chans, axis=2)


def apply_preset(x: np.ndarray, preset: str) -> np.ndarray:
    """Normalise RGB 0–255 pixels ``(..., 3)`` the way ``preset`` says."""
    if preset == "caffe":
        return x[..., ::-1] - _CAFFE_MEAN_BGR
    if preset == "torch":
        return (x / 255.0 - _TORCH_MEAN) / _TORCH_STD
    if preset == "tf":
        return x / 127.5 - 1.0
    if preset == "unit":
        return x / 255.0
    if preset == "raw":
        return x
    raise ImageError(f"unknown preprocessing preset '{preset}'; presets are: {', '.join(PRESETS)}")


def to_tensor(images, *, size: tuple, layout: str = "NCHW", preset: str = "raw",
              channels: int = 3, dtype=np.float32) -> np.ndarray:
    """A batch tensor ``(N, C, H, W)`` or ``(N, H, W, C)`` from one image or a list of them.

    ``channels``: 3 (RGB) or 1 (grey, ITU-R 601 luma of the preset's values); any other count
    is the model's limit, not the image's: :class:`UnsupportedModelError`, before decoding.
    """
    if preset not in PRESETS:
        raise ImageError(f"unknown preprocessing preset '{preset}'; presets are: {', '.join(PRESETS)}")
    if channels not in (1, 3):
        raise UnsupportedModelError(
            f"the model's image input has {channels} channels; onnxviz makes images of 1 (grey) or 3 (RGB) "
            "channels: feed it a ready input tensor instead (a numpy array of the input's shape, a .npy "
            "file on the command line)")
    if isinstance(images, (list, tuple)):
        if not images:
            raise ImageError("no image given; pass a path, a PIL image, an array, or a list of them")
        items = list(images)
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        items = list(images)
    else:
        items = [images]
    return batch_tensor([decode(item, size) for item in items], layout=layout, preset=preset, channels=channels,
                        dtype=dtype)


def batch_tensor(arrays: list, *, layout: str = "NCHW", preset: str = "raw", channels: int = 3,
                 dtype=np.float32) -> np.ndarray:
    """The batch tensor of images already :func:`decode`-d to one size: stacked, ``preset``
    applied, made grey for ``channels=1``, laid out as ``layout``, in ``dtype``."""
    batch = np.stack(arrays).astype(np.float32)
    batch = apply_preset(batch, preset).astype(np.float32)
    if channels == 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if preset == "caffe":
            weights = weights[::-1]
        batch = (batch @ weights)[..., None]
    if layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=dtype)
