"""PyTorch -> ONNX through the dynamo exporter, with the spec's dynamic dims."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

from infergate.build.model_outputs import check_inputs, export_order
from infergate.spec import ModelSpec

# torch loads when a model is exported: a probe of an ONNX artifact (ONNX Runtime,
# OpenVINO) never imports it.
if TYPE_CHECKING:
    import torch

OPSET = 18


def dynamic_shapes(spec: ModelSpec, input_names) -> dict:
    import torch

    dims = {name: torch.export.Dim(name, min=d.min, max=d.max) for name, d in spec.dims.items()}
    return {inp: {axis: dims[dim] for axis, dim in spec.dynamic_axes.get(inp, {}).items()}
            or None for inp in input_names}


def export_onnx(spec: ModelSpec, module: torch.nn.Module, inputs: dict, path: Path) -> None:
    """Export ``module`` to ``path`` (external data beside it for large models)."""
    import torch

    check_inputs(f"{spec.name} (ONNX export)", module, inputs, spec.dynamic_axes)
    with torch.inference_mode():  # output names follow forward's own order (a dict's keys)
        order = export_order(f"{spec.name} (ONNX export)", spec.outputs, module(**inputs))
    # The exporter narrates every pass on stdout; keep it out of the test log.
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            module,
            (),
            kwargs=inputs,
            dynamo=True,
            input_names=list(inputs),
            output_names=order,
            dynamic_shapes=dynamic_shapes(spec, inputs),
            opset_version=OPSET,
        )
    # Always external data: the >2 GB protobuf limit and ORT's quantizer both prefer it.
    program.save(str(path), external_data=True)
