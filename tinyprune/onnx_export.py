"""Deployment: writing a model as an ONNX graph, for ONNX Runtime and friends.

ONNX is the file format deployment engines read: a graph of standard
operators (``Conv``, ``BatchNormalization``, ``Relu``, ``Gemm``, ...) with
the weights stored beside them.  A tinyprune model is a chain, so its graph
is a line: one node (or a few) per layer, in ``named_layers`` order, from
the input ``"input"`` (N, C, H, W) to the output ``"output"``.  The batch
size is left open (``"N"``), so one file serves any batch.

How each layer becomes operators:

=================  ==========================================================
Conv2d             ``Conv`` (strides, pads; the bias as its third input)
DepthwiseConv2d    ``Conv`` with ``group = C``, weight (C, 1, KH, KW) as it is
BatchNorm2d        ``BatchNormalization`` with the running statistics
                   (eval mode: the graph is for inference)
Dense              ``Gemm`` with ``transB = 1``: y = x @ weight.T + bias
GlobalMeanPool     ``GlobalAveragePool``
Flatten            ``Flatten`` (axis 1, channel-major like ours)
ReLU, HardTanh     ``Relu``, ``Clip(-1, 1)``
Identity           ``Identity``
slopehtanh         no ONNX operator: the four-node subgraph
                   h = Clip(x, -1, 1);  y = h - (x - h) * 0.25,
                   the same formula as ``kernels.slopehtanh_forward``
=================  ==========================================================

Weights are written as the forward pass uses them (``layer.effective``:
masked entries are zero), in the model's dtype.  A pruned model keeps its
shapes and zeros; a resized one is smaller; a folded one
(``fold_batchnorm``) has no BatchNormalization nodes -- what deployment tools
that score hardware cost expect.

ONNX Runtime runs float32 graphs; it has no float64 convolution, so a
float64 model's file is valid ONNX that ``onnx.reference`` (the pure-NumPy
evaluator in the ``onnx`` package) can run, but ONNX Runtime cannot.

Needs the ``onnx`` package (``pip install tinyprune[onnx]``); it is imported
when ``export_onnx`` is called, so the rest of tinyprune does not need it.
"""

import numpy as np

from .module import check_model
from .common import atomic_write
from .layers import (Activation, BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Flatten,
                     GlobalMeanPool, HardTanh, Identity, ReLU, SlopeHTanh)

__all__ = ["export_onnx", "onnx_model", "OPSET"]

OPSET = 17   # ONNX operator set: Clip takes its bounds as inputs (since 11), supported widely


class _Graph:
    """The nodes and weights of a graph being built, with fresh names for both."""

    def __init__(self, onnx, dtype):
        self.onnx = onnx
        self.dtype = np.dtype(dtype)
        self.nodes = []
        self.weights = []
        self.count = 0

    def name(self, stem):
        self.count += 1
        return f"{stem}_{self.count}"

    def weight(self, stem, value):
        """Store ``value`` (in the graph's dtype) as a named initializer; returns its name."""
        name = self.name(stem)
        array = np.ascontiguousarray(np.asarray(value, dtype=self.dtype))
        self.weights.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op, inputs, stem, **attributes):
        """Append one operator reading ``inputs``; returns the name of its output."""
        out = self.name(stem)
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attributes))
        return out


def _conv(graph, layer, x, where, group=1):
    kh, kw = layer.kernel
    inputs = [x, graph.weight(where + ".weight", layer.effective("weight"))]
    if getattr(layer, "bias", None) is not None:
        inputs.append(graph.weight(where + ".bias", layer.effective("bias")))
    p = layer.pad
    return graph.node("Conv", inputs, where, kernel_shape=[kh, kw], strides=[layer.stride] * 2,
                      pads=[p, p, p, p], group=group)


def _slopehtanh(graph, x, where):
    # h - (x - h) * 0.25 with h = clip(x, -1, 1): inside [-1, 1] x - h is 0 and y = x.
    lo, hi = graph.weight("minus_one", -1.0), graph.weight("one", 1.0)
    h = graph.node("Clip", [x, lo, hi], where + ".clip")
    outside = graph.node("Sub", [x, h], where + ".outside")
    quarter = graph.node("Mul", [outside, graph.weight("quarter", 0.25)], where + ".quarter")
    return graph.node("Sub", [h, quarter], where)


def _layer_nodes(graph, layer, x, where):
    """Append the nodes computing ``layer`` on tensor ``x``; returns the output tensor's name."""
    kind = type(layer)
    if kind is Conv2d:
        return _conv(graph, layer, x, where)
    if kind is DepthwiseConv2d:
        return _conv(graph, layer, x, where, group=layer.channels)
    if kind is BatchNorm2d:
        # ONNX stores epsilon as a float32; the variance absorbs the difference, so that
        # running_var + epsilon is the model's exact sum even for a float64 graph.
        eps32 = float(np.float32(layer.eps))
        variance = layer.running_var.astype(np.float64) + (layer.eps - eps32)
        inputs = [x] + [graph.weight(f"{where}.{name}", value) for name, value in (
            ("weight", layer.effective("weight")), ("bias", layer.effective("bias")),
            ("running_mean", layer.running_mean), ("running_var", variance))]
        return graph.node("BatchNormalization", inputs, where, epsilon=eps32)
    if kind is Dense:
        inputs = [x, graph.weight(where + ".weight", layer.effective("weight"))]
        if layer.bias is not None:
            inputs.append(graph.weight(where + ".bias", layer.effective("bias")))
        return graph.node("Gemm", inputs, where, transB=1)
    if kind is GlobalMeanPool:
        return graph.node("GlobalAveragePool", [x], where)
    if kind is Flatten:
        return graph.node("Flatten", [x], where, axis=1)
    if kind is ReLU:
        return graph.node("Relu", [x], where)
    if kind is HardTanh:
        return graph.node("Clip", [x, graph.weight("minus_one", -1.0), graph.weight("one", 1.0)], where)
    if kind is Identity:
        return graph.node("Identity", [x], where)
    if kind is SlopeHTanh:
        return _slopehtanh(graph, x, where)
    if isinstance(layer, Activation):
        raise ValueError(f"export_onnx: {where} is an activation with a custom function "
                         f"({layer.name}); ONNX has no operator for it (known: slopehtanh, relu, "
                         "hardtanh, identity)")
    raise ValueError(f"export_onnx: {where} is a {kind.__name__}, which has no ONNX translation; "
                     "known: Conv2d, DepthwiseConv2d, BatchNorm2d, Dense, GlobalMeanPool, Flatten "
                     "and the activation layers")


def onnx_model(model, input_shape=(None, 3, 96, 96)):
    """The ``onnx.ModelProto`` computing ``model`` in eval mode.

    ``input_shape`` (N, C, H, W) is recorded in the graph's input and output
    descriptions (and checked against the model); N None, the default,
    leaves the batch size open.
    """
    import onnx
    check_model(model, 'export_onnx')
    if len(input_shape) != 4 or any(s is None for s in input_shape[1:]):
        raise ValueError(f"export_onnx: input_shape must be (N, C, H, W) with C, H and W given "
                         f"(N may be None), got {tuple(input_shape)}")
    dtype = model.dtype or np.float32
    graph = _Graph(onnx, dtype)
    x = "input"
    for path, layer in model.named_layers():
        if isinstance(layer, Chain):      # an empty chain: nothing to compute
            continue
        x = _layer_nodes(graph, layer, x, f"model{path}")
    graph.nodes.append(onnx.helper.make_node("Identity", [x], ["output"], name="output"))

    element = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    sizes = ["N" if s is None else int(s) for s in input_shape]
    probe = tuple(1 if s is None else int(s) for s in input_shape)
    out_sizes = ["N" if input_shape[0] is None else probe[0]] + list(model.output_shape(probe)[1:])
    inputs = [onnx.helper.make_tensor_value_info("input", element, sizes)]
    outputs = [onnx.helper.make_tensor_value_info("output", element, out_sizes)]
    proto = onnx.helper.make_model(
        onnx.helper.make_graph(graph.nodes, "tinyprune", inputs, outputs, graph.weights),
        opset_imports=[onnx.helper.make_opsetid("", OPSET)], producer_name="tinyprune")
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model, path, input_shape=(None, 3, 96, 96)):
    """Write ``model`` to ``path`` as an ONNX file; returns ``path`` as a Path.

    The graph computes the model in eval mode (BatchNorm with its running
    statistics), whatever mode the model is in.  ``input_shape`` as in
    :func:`onnx_model`.  The file is written under a temporary name and
    renamed, so a crash never leaves half a file at ``path``.

    Run it with ONNX Runtime::

        import onnxruntime
        session = onnxruntime.InferenceSession(str(path))
        logits = session.run(None, {"input": images})[0]    # images float32 NCHW
    """
    proto = onnx_model(model, input_shape)
    data = proto.SerializeToString()
    return atomic_write(path, lambda stream: stream.write(data))
