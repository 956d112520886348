"""ONNX Runtime, CPU execution provider."""

from __future__ import annotations

from infergate.backends.base import Backend, Runner
from infergate.onnx_transforms import dynamic_int8_onnx, fp16_onnx, static_int8_onnx

ONNX_FOR_PRECISION = {
    "fp32": lambda subject: subject.onnx_path,
    "fp16": fp16_onnx,
    "int8_dynamic": dynamic_int8_onnx,
    "int8": static_int8_onnx,
}


class OrtRunner(Runner):
    def __init__(self, label, output_names, model_path, providers):
        super().__init__(label, output_names)
        self.model_path = model_path
        self.providers = providers
        self.session = None

    def activate_impl(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.model_path), options,
                                            providers=self.providers)
        self.settings = {"providers": self.session.get_providers(),
                         "intra_op_num_threads": options.intra_op_num_threads,
                         "graph_optimization_level": str(options.graph_optimization_level),
                         "model": str(self.model_path)}

    def run_impl(self, feed):
        values = self.session.run(list(self.output_names), dict(feed))
        return dict(zip(self.output_names, values, strict=True))

    def deactivate_impl(self):
        self.session = None


class OrtCpu(Backend):
    name = "ort_cpu"
    precisions = tuple(ONNX_FOR_PRECISION)
    requires = ("onnxruntime",)

    def prepare(self, subject, precision: str) -> Runner:
        path = ONNX_FOR_PRECISION[precision](subject)
        return OrtRunner(self.label(subject, precision), subject.spec.outputs, path,
                         ["CPUExecutionProvider"])
