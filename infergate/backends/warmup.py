"""The trivial workload ``Backend.initialise_runtime`` runs before a model loads.

A framework's first model pays for the runtime itself: its libraries' code paged in, plugins
and frontends loaded, thread pools, executors and allocator pools created. That cost does not
grow with the model, and it depends on the host: on the CI machine type OpenVINO's grew by
17-25 MB from one runner instance to the next with identical libraries (issue 11). Running
this graph first, at the combination's precision and thread count, lets the performance probe
read the memory of an initialised runtime and charge the model only for what comes after.

The graph is MatMul (constant weights) + Add + Relu over a dynamic batch: the ops every model
here lowers to somewhere (a fully connected layer), through the same ONNX reader the real
model goes through. ``quantized`` wraps it in the static Q/DQ int8 pattern of
``onnx_transforms.static_int8_onnx`` (uint8 activations, per-channel int8 weights), so the
runtime's int8 machinery is initialised too.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from infergate.atomic import atomic_write_bytes

if TYPE_CHECKING:  # numpy loads with the first warm-up, not with the backend registry
    import numpy as np

FEATURES = 8
OUTPUT = "y"  # the graph's one output, by name
OPSET = 17


def build_graphs() -> None:
    """Build (and cache) the graphs now: the probe does it with the harness's own setup, so
    importing onnx to build them is not counted as a runtime's cost."""
    tiny_onnx(False)
    tiny_onnx(True)
    tiny_onnx(True, symmetric=True)


@cache
def tiny_onnx(quantized: bool = False, symmetric: bool = False) -> bytes:
    """The serialized ONNX graph ``y = relu(x @ w + b)``, x: (batch, 8) float32.
    ``symmetric`` quantizes the activations to int8 with zero point 0, the only Q/DQ form
    TensorRT takes."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((FEATURES, FEATURES)).astype(np.float32)
    b = rng.standard_normal(FEATURES).astype(np.float32)
    init = [numpy_helper.from_array(b, "b")]
    if quantized:
        w_scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
        w_q = np.round(w / w_scale).astype(np.int8)
        init += [numpy_helper.from_array(w_q, "w_q"),
                 numpy_helper.from_array(w_scale, "w_scale"),
                 numpy_helper.from_array(np.zeros(FEATURES, np.int8), "w_zero"),
                 numpy_helper.from_array(np.array(2 / 255, np.float32) if symmetric else
                                         np.array(4 / 255, np.float32), "x_scale"),
                 numpy_helper.from_array(np.array(0, np.int8) if symmetric else
                                         np.array(128, np.uint8), "x_zero")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"]),
                 helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
                 helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"],
                                  axis=1),
                 helper.make_node("MatMul", ["x_dq", "w"], ["h"])]
    else:
        init.append(numpy_helper.from_array(w, "w"))
        nodes = [helper.make_node("MatMul", ["x", "w"], ["h"])]
    nodes += [helper.make_node("Add", ["h", "b"], ["a"]), helper.make_node("Relu", ["a"], [OUTPUT])]
    graph = helper.make_graph(
        nodes, "infergate_warmup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", FEATURES])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what every ONNX Runtime and OpenVINO in range reads
    return model.SerializeToString()


def tiny_onnx_file(directory: Path, quantized: bool = False) -> Path:
    """``tiny_onnx``'s graph as a file under ``directory`` (for a runtime that reads models
    from files), written once; its name holds its digest."""
    graph = tiny_onnx(quantized)
    path = Path(directory) / "warmup" / f"tiny-{hashlib.sha256(graph).hexdigest()[:16]}.onnx"
    if not path.exists():
        atomic_write_bytes(path, graph)
    return path


def tiny_feed(batch: int = 2) -> dict[str, np.ndarray]:
    import numpy as np

    return {"x": np.linspace(-1, 1, batch * FEATURES, dtype=np.float32).reshape(batch, FEATURES)}
