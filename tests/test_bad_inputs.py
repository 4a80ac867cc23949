"""The bad-input matrix: hostile models, bad images, bad options and output paths, one table.

Every case runs through ``onnxviz.cli.main(argv)`` in-process and must give the exact one-line
``error: …`` on stderr (a usage error: argparse's own last line), exit code 1 (2 for usage),
no traceback, and leave the whole test folder as it was: no output file, no temporary file,
every input byte for byte unchanged (sha256). Cases marked ``never opened`` put a FIFO outside
the model's folder where a hostile model points, and check that nothing (Python or
onnxruntime's C++) ever opened it: a reader would unblock the writer that waits on it.
"""

import hashlib
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from builders import Net, save, vgg_like
from onnxviz import render
from onnxviz.cli import main


# ------------------------------------------------------------------ the world a case sees

class World:
    """A test folder: ``in/`` holds a good model and image, ``out/`` is where output goes."""

    def __init__(self, root: Path):
        self.root = root
        self.inp = root / "in"
        self.inp.mkdir()
        (root / "out").mkdir()
        self.out = root / "out" / "maps.png"
        _, model = vgg_like(metadata={"onnxviz.preprocess": "unit"})
        self.proto = model
        self.model = save(model, self.inp / "vgg.onnx")
        self.image = self.inp / "photo.png"
        Image.fromarray((np.random.default_rng(7).random((20, 24, 3)) * 255).astype(np.uint8)).save(self.image)
        self.fifos: list[Fifo] = []

    def file(self, name: str, data: bytes) -> Path:
        path = self.inp / name
        path.write_bytes(data)
        return path

    def model_like(self, name: str, change: Callable[[onnx.ModelProto], None]) -> Path:
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        change(proto)
        return save(proto, self.inp / name)

    def external(self, location: str | None = None, data: Callable[[Path], None] | None = None) -> Path:
        """A one-conv model in ``in/ext/`` with its weights in ``m.onnx.data``."""
        folder = self.inp / "ext"
        folder.mkdir()
        net = Net((1, 3, 16, 16))
        net.conv(3, 8, name="a"); net.act()
        path = save(net.model(metadata={"onnxviz.preprocess": "unit"}), folder / "m.onnx", external=True)
        if data:
            data(folder / "m.onnx.data")
        if location is not None:
            proto = onnx.load(str(path), load_external_data=False)
            for t in proto.graph.initializer:
                for e in t.external_data:
                    if e.key == "location":
                        e.value = location
            path.write_bytes(proto.SerializeToString())
        return path

    def fifo(self, path: Path) -> Path:
        self.fifos.append(Fifo(path))
        return path


class Fifo:
    """A FIFO with a writer waiting on it: ``opened()`` tells whether anyone opened it to read."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        self.path, self.event = path, threading.Event()
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self):
        fd = os.open(self.path, os.O_WRONLY)  # returns once a reader has opened the FIFO
        self.event.set()
        os.close(fd)

    def opened(self) -> bool:
        was = self.event.wait(0.2)
        if not was:  # let the writer go: open a reader ourselves
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            self.thread.join(5)
            os.close(fd)
        return was


def snapshot(root: Path) -> dict:
    """Every entry under ``root``: files by sha256, links by target, FIFOs and folders by kind."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                found[rel] = ("link", os.readlink(p))
            elif p.is_fifo():
                found[rel] = ("fifo",)
            elif p.is_dir():
                found[rel] = ("dir",)
            else:
                found[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return found


# ------------------------------------------------------------------ hand-made inputs

def png(width: int, height: int) -> bytes:
    """A PNG whose header says ``width×height`` (pixels all black, or none at all)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + bytes(3 * width) for _ in range(height)) if width * height <= 10**6 else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def jpeg_truncated(w: World) -> Path:
    path = w.inp / "cut.jpg"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-200])
    return path


def no_conv_model(w: World) -> Path:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return save(helper.make_model(g), w.inp / "mlp.onnx")


def empty_graph_model(w: World) -> Path:
    return save(helper.make_model(helper.make_graph([], "g", [], [])), w.inp / "empty_graph.onnx")


def graphless_model(w: World) -> Path:
    proto = helper.make_model(helper.make_graph([], "g", [], []))
    proto.ClearField("graph")
    return w.file("graphless.onnx", proto.SerializeToString())


def drop_weight(proto):
    del proto.graph.initializer[0]


def rank2_weight(proto):
    t = proto.graph.initializer[0]
    t.CopyFrom(numpy_helper.from_array(np.ones((4, 27), np.float32), t.name))


def opset99(proto):
    proto.opset_import[0].version = 99


def unknown_domain_op(proto):
    proto.opset_import.append(helper.make_opsetid("com.example", 1))
    proto.graph.node[1].domain, proto.graph.node[1].op_type = "com.example", "Frobnicate"


def unwritable_folder(w: World) -> Path:
    folder = w.root / "out" / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        os.close(os.open(folder / "probe", os.O_CREAT | os.O_WRONLY))
    except PermissionError:
        return folder / "maps.png"
    os.unlink(folder / "probe")
    folder.chmod(0o700)
    # root (CAP_DAC_OVERRIDE) writes into a 0o500 folder anyway; sysfs refuses even root
    try:
        os.close(os.open("/sys/onnxviz-probe", os.O_CREAT | os.O_WRONLY))
    except OSError:
        return Path("/sys/maps.png")
    os.unlink("/sys/onnxviz-probe")
    pytest.skip("running as root and /sys is writable: no unwritable folder can be staged here")


def external_entry(w: World, key: str, value: str) -> Path:
    """The one-conv external-data model with ``key`` of every external-data entry set to ``value``."""
    path = w.external()
    proto = onnx.load(str(path), load_external_data=False)
    for t in proto.graph.initializer:
        del t.external_data[:]
        info = {"location": "m.onnx.data", "offset": "0", "length": str(t.ByteSize()), key: value}
        t.external_data.extend(onnx.StringStringEntryProto(key=k, value=v) for k, v in info.items())
    path.write_bytes(proto.SerializeToString())
    return path


def external_fifo(w: World) -> Path:
    """External data named by a FIFO inside the model's folder: refused, never opened (no hang)."""
    path = w.external(location="pipe")
    w.fifo(path.parent / "pipe")
    return path


def npy_claiming(w: World, shape: tuple) -> Path:
    """A .npy file whose header claims ``shape`` of float32 but holds 64 bytes."""
    path = w.inp / "huge.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(bytes(64))
    return path


def empty_conv_output(proto: onnx.ModelProto) -> None:
    proto.graph.node[0].output[0] = ""  # found by the fuzz test (a QLinearConv's, there)


def shadow_the_input(proto: onnx.ModelProto) -> None:
    proto.graph.node[1].output[0] = "input"  # found by the fuzz test: weights and shapes disagreed


def weight_dims_too_big(proto: onnx.ModelProto) -> None:
    proto.graph.initializer[0].dims[3] = 300  # 4×3×3×3 floats stored, 4×3×3×300 claimed


def truncate(size: int):
    return lambda path: path.write_bytes(path.read_bytes()[:size])


# ------------------------------------------------------------------ the matrix

@dataclass
class Case:
    id: str
    make: Callable[[World], tuple]   # World -> (argv, expected line or compiled pattern)
    code: int = 1
    patch: Callable | None = field(default=None, repr=False)


def _external_outside(command: str, how: str) -> Case:
    """A model whose external data leads to a FIFO outside its folder: refused, never opened."""
    def make(w: World):
        secret = w.fifo(w.inp / "outside" / "secret")
        if how == "dotdot":
            path = w.external(location="../outside/secret")
            line = (f"initializer 'a.weight' has external data location '../outside/secret', which leads "
                    f"outside the model's folder '{path.parent}'; refused")
        elif how == "absolute":
            path = w.external(location=str(secret))
            line = (f"initializer 'a.weight' has external data location '{secret}'; it must be a relative "
                    "path inside the model's folder")
        else:
            def link(data):
                data.unlink()
                data.symlink_to(secret)
            path = w.external(data=link)
            line = (f"initializer 'a.weight' has external data location 'm.onnx.data', a symbolic link to "
                    f"'{secret}', outside the model's folder '{path.parent}'; refused")
        argv = [command, path, w.image, "-o", w.out] if command == "features" else [command, path, "-o", w.out]
        return argv, line
    return Case(f"external-data-{how}-{command}-never-opened", make)


CASES = [
    # ---- model files
    Case("model-empty-file", lambda w: (
        ["features", w.file("empty.onnx", b""), w.image, "-o", w.out],
        f"'{w.inp / 'empty.onnx'}' is empty (0 bytes), not an ONNX model")),
    Case("model-random-bytes", lambda w: (
        ["summary", w.file("random.onnx", np.random.default_rng(1).bytes(1000))],
        f"'{w.inp / 'random.onnx'}' is not an ONNX model, or is truncated: its protobuf encoding breaks off "
        "inside 1000 bytes")),
    Case("model-text-file", lambda w: (
        ["filters", w.file("notes.onnx", b"hello"), "-o", w.out],
        f"'{w.inp / 'notes.onnx'}' is not an ONNX model, or is truncated: its protobuf encoding breaks off "
        "inside 5 bytes")),
    Case("model-truncated", lambda w: (
        ["features", w.file("cut.onnx", w.model.read_bytes()[:1000]), w.image, "-o", w.out],
        f"'{w.inp / 'cut.onnx'}' is not an ONNX model, or is truncated: its protobuf encoding breaks off "
        "inside 1000 bytes")),
    Case("model-is-a-tensor-protobuf", lambda w: (
        ["summary", w.file("input_0.pb", numpy_helper.from_array(np.ones((2, 3), np.float32), "t")
                           .SerializeToString())],
        f"'{w.inp / 'input_0.pb'}' is not an ONNX model: its protobuf fields do not decode as an onnx "
        "ModelProto (a tensor, graph or other message saved on its own?)")),
    Case("model-is-a-graph-protobuf", lambda w: (
        ["summary", w.file("graph.pb", w.proto.graph.SerializeToString())],
        f"'{w.inp / 'graph.pb'}' is not an ONNX model: it has neither a graph nor an IR version (a tensor, "
        "graph or other protobuf message saved on its own?)")),
    Case("model-without-graph", lambda w: (
        ["features", graphless_model(w), w.image, "-o", w.out],
        f"'{w.inp / 'graphless.onnx'}' is an ONNX model without a graph: nothing to show")),
    Case("model-with-empty-graph", lambda w: (
        ["filters", empty_graph_model(w), "-o", w.out],
        f"'{w.inp / 'empty_graph.onnx'}' has an empty graph: no nodes, so no convolution")),
    Case("model-without-conv", lambda w: (
        ["features", no_conv_model(w), w.image, "-o", w.out],
        f"'{w.inp / 'mlp.onnx'}' has no convolution (Conv, ConvTranspose, QLinearConv, ConvInteger, "
        "FusedConv); its ops are: Relu")),
    Case("model-missing", lambda w: (
        ["features", w.inp / "missing.onnx", w.image, "-o", w.out],
        f"model file '{w.inp / 'missing.onnx'}' does not exist")),
    Case("model-is-a-folder", lambda w: (
        ["summary", w.inp], f"'{w.inp}' is a folder, not an ONNX model file")),
    Case("model-is-a-fifo-never-opened", lambda w: (
        ["summary", w.fifo(w.inp / "pipe.onnx")],
        f"'{w.inp / 'pipe.onnx'}' is not a regular file (a device, pipe or socket), not an ONNX model")),
    Case("conv-weight-missing", lambda w: (
        ["filters", w.model_like("noweight.onnx", drop_weight), "-o", w.out],
        "conv 'b1c1' takes its weights from 'b1c1.weight', which no initializer, node or graph input "
        "provides; the graph is broken")),
    Case("conv-weight-wrong-rank", lambda w: (
        ["features", w.model_like("rank2.onnx", rank2_weight), w.image, "-o", w.out],
        "the weight of conv 'b1c1' ('b1c1.weight') has shape 4×27; a convolution weight has rank 3 or "
        "more (O, I/group, *kernel)")),
    *[Case(f"conv-weight-data-shorter-than-its-dims-{command}", lambda w, command=command: (
        [command, w.model_like("short.onnx", weight_dims_too_big), *([w.image] if command == "features" else []),
         "-o", w.out],
        "initializer 'b1c1.weight' holds 432 bytes of data, but its dims [4, 3, 3, 300] of float need 43,200"))
      for command in ("filters", "features")],
    Case("conv-output-name-empty", lambda w: (
        ["summary", w.model_like("noname.onnx", empty_conv_output)],
        "the graph is broken: conv 'b1c1' (Conv) has an empty output name, so nothing can read what it "
        "computes")),
    Case("tensor-both-graph-input-and-node-output", lambda w: (
        ["summary", w.model_like("shadow.onnx", shadow_the_input)],
        "the graph is broken: tensor 'input' is both a graph input and the output of node 'relu_1' "
        "(each tensor is made once)")),
    Case("opset-99-unsupported-by-onnxruntime", lambda w: (
        ["features", w.model_like("opset99.onnx", opset99), w.image, "-o", w.out],
        re.compile(r"onnxruntime cannot load the model: the model uses ai\.onnx opset 99; onnxruntime "
                   + re.escape(ort.__version__) + r" supports up to opset \d+"))),
    Case("op-of-an-unknown-domain", lambda w: (
        ["features", w.model_like("custom.onnx", unknown_domain_op), w.image, "-o", w.out],
        f"onnxruntime cannot load the model: op com.example:Frobnicate is unknown to onnxruntime "
        f"{ort.__version__} (a custom op, or one from a newer opset or an op domain the model does not "
        "import)")),
    # ---- external data
    Case("external-data-file-missing", lambda w: (
        ["features", w.external(data=Path.unlink), w.image, "-o", w.out],
        "external data 'm.onnx.data' of initializer 'a.weight' cannot be read: No such file or directory")),
    Case("external-data-file-truncated", lambda w: (
        ["filters", w.external(data=truncate(100)), "-o", w.out],
        "external data 'm.onnx.data' of initializer 'a.weight' is truncated: needs 864 bytes at offset 0, "
        "file has 100")),
    Case("external-data-file-truncated-features", lambda w: (
        ["features", w.external(data=truncate(880)), w.image, "-o", w.out],
        "external data 'm.onnx.data' of initializer 'a.bias' is truncated: needs 32 bytes at offset 864, "
        "file has 880")),
    Case("external-data-location-etc-passwd", lambda w: (
        ["filters", w.external(location="../../etc/passwd"), "-o", w.out],
        "initializer 'a.weight' has external data location '../../etc/passwd', which leads outside the "
        f"model's folder '{w.inp / 'ext'}'; refused")),
    Case("external-data-location-absolute-etc-passwd", lambda w: (
        ["features", w.external(location="/etc/passwd"), w.image, "-o", w.out],
        "initializer 'a.weight' has external data location '/etc/passwd'; it must be a relative path inside "
        "the model's folder")),
    *[_external_outside(command, how) for how in ("dotdot", "absolute", "symlink")
      for command in ("filters", "features")],
    *[Case(f"external-data-is-a-fifo-{command}-never-opened", lambda w, command=command: (
        [command, external_fifo(w), *([w.image] if command == "features" else []), "-o", w.out],
        "initializer 'a.weight' has external data location 'pipe', which is not a regular file (a folder, "
        "device or pipe); refused")) for command in ("filters", "features")],
    Case("external-data-location-with-a-nul-byte", lambda w: (
        ["features", external_entry(w, "location", "w\x00.bin"), w.image, "-o", w.out],
        "initializer 'a.weight' has an external data location with a NUL byte ('w\\x00.bin'); it must be a "
        "file name inside the model's folder")),
    Case("external-data-empty-length", lambda w: (
        ["features", external_entry(w, "length", ""), w.image, "-o", w.out],
        "initializer 'a.weight' has a non-numeric external data offset or length ('0', ''); they count bytes")),
    # ---- images and arrays
    Case("npy-header-claims-4-tb", lambda w: (
        ["features", w.model, npy_claiming(w, (1, 3, 16, 2**38)), "-o", w.out],
        f"'{w.inp / 'huge.npy'}' is truncated: its header says shape (1, 3, 16, {2**38}) of float32 "
        f"({3 * 16 * 2**40:,} bytes), the file holds 64")),
    Case("image-not-an-image", lambda w: (
        ["features", w.model, w.file("notes.txt", b"hello"), "-o", w.out],
        f"'{w.inp / 'notes.txt'}' is not an image Pillow can decode (JPEG, PNG, BMP, GIF, TIFF, WebP, …)")),
    Case("image-empty-file", lambda w: (
        ["features", w.model, w.file("empty.png", b""), "-o", w.out],
        f"image '{w.inp / 'empty.png'}' is empty (0 bytes)")),
    Case("image-truncated-jpeg", lambda w: (
        ["features", w.model, jpeg_truncated(w), "-o", w.out],
        re.compile(re.escape(f"image '{w.inp / 'cut.jpg'}' is truncated or corrupt: ") + r"[^\n]+"))),
    Case("image-0x0", lambda w: (
        ["features", w.model, w.file("zero.png", png(0, 0)), "-o", w.out],
        f"'{w.inp / 'zero.png'}' is not an image Pillow can decode (JPEG, PNG, BMP, GIF, TIFF, WebP, …)")),
    Case("image-1x1", lambda w: (
        ["features", w.model, w.file("dot.png", png(1, 1)), "-o", w.out],
        f"image '{w.inp / 'dot.png'}' is 1×1 pixels; onnxviz needs at least 8×8")),
    Case("image-100000x1", lambda w: (
        ["features", w.model, w.file("line.png", png(100000, 1)), "-o", w.out],
        f"image '{w.inp / 'line.png'}' is 100000×1 pixels; onnxviz needs at least 8×8")),
    Case("image-over-the-decompression-bomb-limit", lambda w: (
        ["features", w.model, w.file("bomb.png", png(20000, 20000)), "-o", w.out],
        f"image '{w.inp / 'bomb.png'}' has 400,000,000 pixels, over Pillow's decompression-bomb limit of "
        f"{Image.MAX_IMAGE_PIXELS:,}; refused (shrink it first)")),
    Case("image-just-over-a-lowered-bomb-limit", lambda w: (
        ["features", w.model, w.file("big.png", png(40, 40)), "-o", w.out],
        f"image '{w.inp / 'big.png'}' has 1,600 pixels, over Pillow's decompression-bomb limit of 1,000; "
        "refused (shrink it first)"),
        patch=lambda mp: mp.setattr(Image, "MAX_IMAGE_PIXELS", 1000)),
    Case("image-missing", lambda w: (
        ["features", w.model, w.inp / "nope.png", "-o", w.out],
        f"image file '{w.inp / 'nope.png'}' does not exist")),
    Case("image-is-a-folder", lambda w: (
        ["features", w.model, w.inp, "-o", w.out], f"image '{w.inp}' is a folder, not an image file")),
    Case("image-is-a-fifo-never-opened", lambda w: (
        ["features", w.model, w.fifo(w.inp / "pipe.png"), "-o", w.out],
        f"image '{w.inp / 'pipe.png'}' is not a regular file (a device, pipe or socket)")),
    # ---- layers and options
    Case("unknown-layer-filters", lambda w: (
        ["filters", w.model, "--layer", "conv9", "-o", w.out], "no layer 'conv9'; layers are: b1c1, b1c2, b2c1")),
    Case("unknown-layer-features", lambda w: (
        ["features", w.model, w.image, "--layer", "b1c1", "--layer", "b9*", "-o", w.out],
        "no layer 'b9*'; layers are: b1c1, b1c2, b2c1")),
    Case("max-0", lambda w: (
        ["filters", w.model, "--max", "0", "-o", w.out],
        "onnxviz filters: error: argument --max: must be 1 or more, not 0"), code=2),
    Case("max-negative", lambda w: (
        ["features", w.model, w.image, "--max", "-3", "-o", w.out],
        "onnxviz features: error: argument --max: must be 1 or more, not -3"), code=2),
    Case("max-memory-not-a-size", lambda w: (
        ["features", w.model, w.image, "--max-memory", "lots", "-o", w.out],
        "onnxviz features: error: argument --max-memory: 'lots' is not a size such as 512M, 4G or 1000000 "
        "(bytes), nor 'off'"), code=2),
    # (the 4-channel convs' NCHWc buffers are padded to 8 channels, and the maps are copied out
    # of them last: 5 KiB more than before)
    Case("feature-maps-over-the-memory-budget", lambda w: (
        ["features", w.model, w.image, "--layer", "*", "--max-memory", "4k", "-o", w.out],
        "these feature maps would need 21.0 KiB at input 1×3×16×16 (input 3.0 KiB, maps of 3 layers 9.5 KiB, "
        "intermediate tensors held at the same time 8.5 KiB); the budget is 4.0 KiB: ask for fewer layers or "
        "images or a smaller size, or raise it with --max-memory, max_bytes= or ONNXVIZ_MAX_BYTES")),
    Case("feature-maps-over-the-budget-from-the-environment", lambda w: (
        ["features", w.model, w.image, "-o", w.out],
        "these feature maps would need 17.0 KiB at input 1×3×16×16 (input 3.0 KiB, maps of 2 layers 5.5 KiB, "
        "intermediate tensors held at the same time 8.5 KiB); the budget is 1000 bytes: ask for fewer layers "
        "or images or a smaller size, or raise it with --max-memory, max_bytes= or ONNXVIZ_MAX_BYTES"),
        patch=lambda mp: mp.setenv("ONNXVIZ_MAX_BYTES", "1000")),
    Case("picture-over-the-pixel-limit", lambda w: (
        ["features", w.model, w.image, "--layer", "b1c1", "-o", w.out],
        "this picture would be 98×98 = 9,604 pixels, over the limit of 5,000 (render.MAX_PIXELS); draw at "
        "most 2 (--max 2 on the command line, max=2 in Python)"),
        patch=lambda mp: mp.setattr(render.mosaic, "MAX_PIXELS", 5000)),
    # ---- output paths
    Case("output-folder-missing", lambda w: (
        ["features", w.model, w.image, "-o", w.root / "out" / "nope" / "maps.png"],
        f"output folder '{w.root / 'out' / 'nope'}' does not exist")),
    Case("output-folder-unwritable", lambda w: (lambda out: (
        ["filters", w.model, "-o", out],
        f"output folder '{out.parent}' is not writable"))(unwritable_folder(w))),
    Case("output-is-a-folder", lambda w: (
        ["filters", w.model, "-o", w.root / "out"],
        f"output '{w.root / 'out'}' is a folder; give a file name such as maps.png")),
    Case("output-is-the-model", lambda w: (
        ["filters", w.model, "-o", w.inp / ".." / "in" / "vgg.onnx"],
        f"output '{w.inp / '..' / 'in' / 'vgg.onnx'}' is the input file '{w.model}'; choose another name")),
    Case("output-is-the-models-external-data", lambda w: (
        ["filters", w.external(), "-o", w.inp / "ext" / "m.onnx.data"],
        f"output '{w.inp / 'ext' / 'm.onnx.data'}' is the input file "
        f"'{os.path.realpath(w.inp / 'ext' / 'm.onnx.data')}'; choose another name")),
    Case("output-file-name-too-long-nothing-written", lambda w: (
        ["filters", w.model, "--layer", "0", "--layer", "1", "-o", w.root / "out" / ("s" * 250 + ".png")],
        f"output file name '{'s' * 250}_b1c1.png' is 259 bytes long; the folder allows at most 255")),
    Case("output-is-the-image", lambda w: (
        ["features", w.model, w.image, "-o", w.image],
        f"output '{w.image}' is the input file '{w.image}'; choose another name")),
    Case("output-links-to-the-model", lambda w: (
        ["filters", w.model, "-o", _link(w.root / "out" / "link.png", w.model)],
        f"output '{w.root / 'out' / 'link.png'}' is the input file '{w.model}'; choose another name")),
    Case("output-per-layer-name-is-the-model", lambda w: (
        ["features", _copy(w.model, w.root / "out" / "maps_b2c1.png"), w.image, "-o", w.out],
        f"output '{w.root / 'out' / 'maps_b2c1.png'}' is the input file '{w.root / 'out' / 'maps_b2c1.png'}'; "
        "choose another name")),
]


def _link(path: Path, target: Path) -> Path:
    path.symlink_to(target)
    return path


def _copy(source: Path, path: Path) -> Path:
    path.write_bytes(source.read_bytes())
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.usefixtures("nchwc8")  # the memory-budget figures, byte for byte
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    w = World(tmp_path)
    argv, expected = case.make(w)
    if case.patch:
        case.patch(monkeypatch)
    before = snapshot(tmp_path)
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    opened = [f.path for f in w.fifos if f.opened()]
    assert "Traceback" not in out + err
    assert code == case.code, err
    if code == 1:
        assert out == "" and err.endswith("\n") and err.count("\n") == 1, err
        line = err[:-1]
        if isinstance(expected, re.Pattern):
            assert expected.fullmatch(line.removeprefix("error: ")), line
        else:
            assert line == f"error: {expected}"
    else:
        assert err.splitlines()[-1] == expected
    assert not opened, f"{opened} were opened"
    assert snapshot(tmp_path) == before, "an input changed, or something was written"


# ------------------------------------------------------------------ odd inputs that must work

def _odd_images(folder: Path) -> dict:
    red = Image.new("RGB", (16, 16), (200, 10, 10))
    made = {
        "16-bit.png": Image.fromarray(np.full((16, 16), 50000, np.uint16)),
        "cmyk.jpg": red.convert("CMYK"),
        "cmyk.tiff": red.convert("CMYK"),
        "palette.png": red.convert("P", palette=Image.ADAPTIVE),
        "grey-alpha.png": red.convert("LA"),
    }
    for name, img in made.items():
        img.save(folder / name)
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    for name in ("animated.gif", "animated.png"):
        frames[0].save(folder / name, save_all=True, append_images=frames[1:])
        made[name] = None
    return made


def test_odd_but_valid_images_work(tmp_path, capsys):
    """16-bit, CMYK, palette, grey+alpha, animated GIF and PNG: a picture, inputs untouched."""
    w = World(tmp_path)
    for name in _odd_images(w.inp):
        before = snapshot(w.inp)
        out = tmp_path / "out" / f"{name}.png"
        code = main(["features", str(w.model), str(w.inp / name), "--layer", "b1c1", "-o", str(out)])
        assert (code, capsys.readouterr().err) == (0, ""), name
        with Image.open(out) as img:
            img.load()
        assert snapshot(w.inp) == before


def test_a_symlinked_model_works(tmp_path, capsys):
    """Found on the way: through a link in another folder, a model's weights (kept in the model
    file itself when large) were refused as 'outside the model's folder'."""
    real, elsewhere = tmp_path / "real", tmp_path / "links"
    real.mkdir(), elsewhere.mkdir()
    net = Net((1, 3, 16, 16))
    net.conv(3, 64, name="big"); net.act()  # 6912 bytes of weights: read from the file on demand
    model = net.model(metadata={"onnxviz.preprocess": "unit"})
    save(model, real / "inline.onnx")
    save(model, real / "external.onnx", external=True)
    image = tmp_path / "photo.png"
    Image.new("RGB", (16, 16), (9, 99, 199)).save(image)
    for name in ("inline.onnx", "external.onnx"):
        (elsewhere / name).symlink_to(real / name)
        assert main(["filters", str(elsewhere / name), "-o", str(tmp_path / "f.png")]) == 0
        assert main(["features", str(elsewhere / name), str(image), "-o", str(tmp_path / "m.png")]) == 0
    assert capsys.readouterr().err == ""
