"""How much memory one onnxruntime run of a sub-graph holds at its peak, simulated node by node.

The memory guard (:mod:`onnxviz.budget`) asks :func:`run_peak` for the run that computes the
requested tensors: the nodes :func:`onnxviz.graph.rewrite.prune` keeps, in graph order, on the
sizes :class:`onnxviz.graph.shapes.Shapes` gives (every tensor sized: nothing is guessed).
Live at each node: the inputs (held by the caller), each buffer from the node that makes it to
the last node that reads it, and each requested tensor's graph output.

What onnxruntime's CPU provider does to a buffer, one rule per case, each with the example it
was measured on (peak RSS above the process without the run, onnxruntime 1.32, arena off):

=====================  =================================================  ==========================
case                   counted                                            measured on
=====================  =================================================  ==========================
in place               an op of :data:`IN_PLACE` with one non-constant    VGG16's Relu after each
                       input that dies with it writes over that input     conv (fused into it)
blocked conv           a 2-D float ``Conv``/``FusedConv`` with a          conv 3→32 9×9 at 720²:
                       constant weight runs in the NCHWc layout (its      127 MiB = its output
                       channels padded to :data:`BLOCK`): its output is   twice; conv 32→64 /2:
                       copied for a reader that is not blocked            95 MiB = input copy
                       (``ReorderOutput``), an input of ≥ ``BLOCK``       63 + output 32
                       channels made by one that is not is copied into
                       it (``ReorderInput``)
stays blocked          pools, activations, BatchNorm, ``Add``/``Sum`` of  ResNet18 (FusedConv):
                       blocked inputs keep the layout (onnxruntime fuses  one ReorderOutput for
                       the residual ``Add`` and the activation into the   20 convs; all layers
                       conv); an ``Add`` of a requested map reads its     requested: 20, its 7
                       graph output                                       Adds in NCHW, its
                                                                          MaxPool blocked
ConvTranspose          its column buffer ``C_out/g · k² · H_in · W_in``   64→32 3×3 /2 at 360²:
                       while it runs                                      206 MiB = 63 + 142
float16                computed in float32 (onnxruntime casts around      fp16 MobileNetV3: 63
                       every op it has no float16 kernel for, and the     Casts, 62 float32
                       casts between them cancel): 4 bytes a value, a     NCHWc convs
                       float32 copy of a float16 input; a requested map
                       is cast back
Dropout                its mask, when nothing reads it, is never made     the Model Zoo's Caffe2
                       (onnxruntime removes the node): not sized, not     SqueezeNet (opset 9)
                       counted; its output is its input (in place)
requested              a map is its graph output; a blocked one besides   ResNet18 ×32, layers
                       its working buffer, copied out at the end of the   0–4: 300 MiB = the 5
                       run (onnxruntime runs the ReorderOutput nodes it   maps (196) and the
                       adds for graph outputs last) unless a node reads   first one's working
                       it as NCHW before                                  buffer (98)
=====================  =================================================  ==========================

Known limits: this is the run without onnxruntime's CPU arena (feature-map sessions turn it
off: :func:`onnxviz.runtime.session`), which would keep freed pages; kernel scratch buffers
other than ConvTranspose's are not counted; If/Loop bodies are not looked into;
the NCHWc layout is assumed for every sub-model (onnxviz turns it off above
``onnxviz.runtime.LARGE_WEIGHTS`` of weights, where the estimate then counts a few copies too many).
"""

from __future__ import annotations

import math
import platform

import numpy as np
import onnx

from .graph.index import body_inputs, node_attr, weight_input

__all__ = ["plan", "unmade", "run_peak", "IN_PLACE", "BLOCK"]

#: Elementwise ops whose output onnxruntime writes over their one non-constant input when
#: nothing later reads it (its kernels may run in place, and a conv's bias, BatchNorm and
#: activation are fused into the conv): no new buffer is counted for them then.
IN_PLACE = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Clip", "ThresholdedRelu", "Gelu", "Mish", "Abs", "Neg", "Exp", "Log", "Sqrt",
    "Reciprocal", "Erf", "Add", "Sub", "Mul", "Div", "BatchNormalization", "Identity", "Dropout"})
def _nchwc_block() -> int:
    """Channels of one NCHWc block on this machine, as onnxruntime's MLAS picks it: 16 with
    AVX-512F, 8 with AVX2 on x86-64, and no NCHWc layout (0) elsewhere. Measured here
    (AVX-512): a conv 3→8 at 720² holds 47 MiB = its output padded to 16 channels (31.6)
    and the copy out (15.8)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return 0
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:  # not Linux: AVX2 is the common case
        return 8
    return 16 if "avx512f" in flags else 8 if "avx2" in flags else 0


#: Channels of one NCHWc block (see :func:`_nchwc_block`; 0: no blocked layout).
BLOCK = _nchwc_block()
#: Ops that keep a blocked tensor blocked when all their data inputs are (see the table).
_STAYS_BLOCKED = frozenset({
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Relu", "Clip", "Sigmoid", "Tanh",
    "LeakyRelu", "HardSigmoid", "BatchNormalization", "Add", "Sum"})
_HALF = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def itemsize(elem_type: int) -> int:
    """Bytes of one value of an ONNX element type (undefined or exotic types: 4)."""
    try:
        return max(1, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)
    except Exception:  # undefined or exotic types: count them as float32
        return 4


def unmade(nodes, tensors) -> set:
    """Outputs of ``nodes`` onnxruntime never makes: a ``Dropout``'s mask that no node reads
    and nobody asked for (its EliminateDropout rewrite removes the node, at the basic level).
    Nothing sizes them, and they need no size (the Model Zoo's Caffe2 SqueezeNet, opset 9)."""
    read = {i for n in nodes for i in n.input} | set(tensors)
    return {o for n in nodes if n.op_type == "Dropout" for o in n.output[1:] if o and o not in read}


def plan(index, tensors) -> tuple[list, set]:
    """(the nodes that compute ``tensors`` in graph order, the constant tensors): the
    sub-graph :func:`onnxviz.graph.rewrite.prune` keeps."""
    wanted, seen, stack = {}, set(), list(tensors)
    while stack:
        node = index.producers.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        wanted[index.positions[id(node)]] = node
        stack.extend(i for i in list(node.input) + sorted(body_inputs(node)) if i)
    nodes = [wanted[k] for k in sorted(wanted)]
    const = set(index.initializers)
    for node in nodes:
        ins = [i for i in node.input if i]
        values = ins[:1] if node.op_type == "CastLike" else ins  # CastLike reads its target's type only
        if node.op_type == "Constant" or (values and all(i in const for i in values)
                                          and not any(a.g.node or a.graphs for a in node.attribute)):
            # folded by onnxruntime at load, or (CastLike of a constant: torch's unoptimised
            # zero bias, Expand(CastLike(0, x), Shape(weight)[:1])) a weight-sized side computation
            const.update(o for o in node.output if o)
    return nodes, const


class _Run:
    """The live buffers of one simulated run; a buffer is ``(tensor, layout)``, the layout
    ``"b"`` (NCHWc blocks) or ``"n"`` (as in the graph)."""

    def __init__(self, index, nodes, const, shapes, tensors, base: int):
        self.index, self.nodes, self.const, self.shapes = index, nodes, const, shapes
        self.requested = set(tensors)
        self.unmade = unmade(nodes, tensors)
        self.base = base
        self.held: dict = {}        # (tensor, layout) -> bytes
        self.made: dict = {}        # tensor -> the layout its node makes it in
        self.wants: list = []       # per node: {input: the layout it reads it in}
        self.need: dict = {}        # (tensor, layout) -> the last node that reads it so (or copies it)
        self.kept = self.peak = 0

    def bytes(self, name: str, layout: str, compute: bool = True) -> int:
        """Bytes of ``name`` in ``layout``: computed (float16 as float32) or as declared."""
        dims, elem = self.shapes.types[name]
        size = 4 if compute and elem in _HALF else itemsize(elem)
        if layout == "b" and len(dims) == 4:
            dims = (dims[0], -(-dims[1] // BLOCK) * BLOCK, *dims[2:])
        return math.prod(dims) * size

    def half(self, name: str) -> bool:
        return self.shapes.types[name][1] in _HALF

    def blocked_conv(self, node) -> bool:
        """Whether onnxruntime's NCHWc transformer takes this conv (see the table)."""
        if not BLOCK or node.op_type not in ("Conv", "FusedConv") or not node.input:
            return False
        w = weight_input(node)
        init = self.index.initializers.get(w)
        wdims = tuple(init.dims) if init is not None else (self.shapes.dims(w) if w in self.const else None)
        x = self.shapes.types.get(node.input[0])
        if not wdims or len(wdims) != 4 or x is None or x[1] not in _HALF | {onnx.TensorProto.FLOAT}:
            return False
        group = node_attr(node, "group", 1) or 1
        cout, cin = wdims[0], wdims[1]
        if group == 1:
            return cin < BLOCK or cin % BLOCK == 0
        return cout % BLOCK == 0 and (cin == 1 and cout == group or cin % BLOCK == 0)

    def layouts(self) -> None:
        """Pass 1: the layout each node makes its outputs in and reads its inputs in, and so
        how long each buffer lives."""
        for pos, node in enumerate(self.nodes):
            # (a name nothing makes is a broken graph: onnxruntime says so when the session is built)
            data = [i for i in node.input if i and i not in self.const and i in self.shapes.types]
            if data and self.blocked_conv(node):
                made = "b"
                wants = {d: "b" for d in data[1:]}  # FusedConv's residual input
                wants[data[0]] = "b" if self.shapes.dims(data[0])[1] >= BLOCK else "n"
            elif node.op_type in _STAYS_BLOCKED and data and all(self.made.get(d) == "b" for d in data) \
                    and (len(data) == 1 or not self.requested.intersection(data)) \
                    and len({self.shapes.dims(d) for d in data}) == 1:
                made, wants = "b", {d: "b" for d in data}
            else:
                made, wants = "n", {d: "n" for d in data}
            wants.update({name: "n" for name in body_inputs(node) if name not in self.const})
            for d, layout in wants.items():
                own = self.made.get(d, "n")
                if layout != own and (d, layout) not in self.need:  # the original lives until it
                    self.need[(d, own)] = max(self.need.get((d, own), -1), pos - 0.5)  # is copied
                self.need[(d, layout)] = pos
            self.wants.append(wants)
            for out in node.output:
                if out:
                    self.made[out] = made
        end = len(self.nodes)  # a requested map's graph output lives to the end; a blocked one
        for t in self.requested:  # is copied out there, if no node read it as NCHW before
            if self.made.get(t) == "b":
                if (t, "n") not in self.need:
                    self.need[(t, "b")] = max(self.need.get((t, "b"), -1), end - 0.5)
                self.need[(t, "n")] = end

    def check(self, extra: int = 0) -> None:
        self.peak = max(self.peak, self.base + self.kept + sum(self.held.values()) + extra)

    def copy(self, name: str, layout: str) -> None:
        """The ``layout`` copy of ``name`` a node needs: a reorder, or a float16 input's cast."""
        if name in self.made:
            if self.made[name] == layout or (name, layout) in self.held:
                return
        elif layout == "n" and not self.half(name) or (name, layout) in self.held:
            return  # a graph input as given (in ``base``)
        elif layout == "b" and self.half(name):
            self.copy(name, "n")  # cast, then reorder
        self.held[(name, layout)] = self.bytes(name, layout)
        self.check()

    def step(self, pos: int, node) -> None:
        if all(o in self.const for o in node.output if o):
            return
        for d, layout in self.wants[pos].items():
            self.copy(d, layout)
        self.free(lambda key: self.need.get(key, -1) < pos)
        data = [i for i in node.input if i and i not in self.const and i in self.shapes.types]
        made = self.made.get(node.output[0], "n")
        scratch = 0
        w = self.index.initializers.get(weight_input(node)) if node.op_type == "ConvTranspose" else None
        if w is not None and len(w.dims) >= 3 and data:  # col buffer: C_out/g · k² · H_in · W_in
            scratch = w.dims[1] * math.prod(w.dims[2:]) * math.prod(self.shapes.dims(data[0])[2:]) * 4
        for k, out in enumerate(o for o in node.output if o and o not in self.unmade):
            size = self.bytes(out, made)
            src = (data[0], self.wants[pos].get(data[0])) if data else None
            if k == 0 and node.op_type in IN_PLACE and len(data) == 1 and src in self.held \
                    and self.need.get(src, -1) <= pos and self.held[src] >= size:
                size = self.held.pop(src)
            if out in self.requested and made == "n" and not self.half(out):
                self.kept += size  # the buffer is the graph output: alive to the end
                continue
            if out in self.requested and made == "n":
                self.kept += self.bytes(out, "n", compute=False)  # float16: cast back, besides
            self.held[(out, made)] = size
        self.check(scratch)
        self.free(lambda key: self.need.get(key, -1) <= pos)

    def free(self, dead) -> None:
        for key in [key for key in self.held if dead(key)]:
            del self.held[key]


def run_peak(index, nodes, const, tensors, shapes, base: int) -> tuple[int, int]:
    """(peak bytes, bytes of ``tensors`` as returned): one run of ``nodes`` (see :func:`plan`)
    on the sizes of ``shapes``, ``base`` bytes of inputs held throughout (see the table)."""
    run = _Run(index, nodes, const, shapes, tensors, base)
    run.layouts()
    for pos, node in enumerate(nodes):
        run.step(pos, node)
    for t in [t for n in nodes for t in n.output if t in run.requested and run.made.get(t) == "b"]:
        run.copy(t, "n")  # onnxruntime runs the ReorderOutput nodes it adds for graph outputs last
        run.held.pop((t, "b"), None)
    maps = sum(math.prod(shapes.dims(t)) * itemsize(shapes.types[t][1]) for t in run.requested)
    return max(run.peak, base + run.kept), maps
