"""ONNX Runtime, CPU execution provider."""

from __future__ import annotations

from infergate.backends.base import ONNX_EXPORT, Backend, Runner
from infergate.backends.warmup import OUTPUT, tiny_feed, tiny_onnx, tiny_onnx_file
from infergate.build.onnx_transforms import dynamic_int8_onnx, fp16_onnx, static_int8_onnx

ONNX_FOR_PRECISION = {
    "fp32": lambda subject: subject.onnx_path,
    "fp16": fp16_onnx,
    "int8_dynamic": dynamic_int8_onnx,
    "int8": static_int8_onnx,
}


def session_options(threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def warm_session(providers: list, precision: str, threads: int | None) -> tuple[object, dict]:
    """``initialise_runtime`` for every ONNX Runtime backend: a session of the tiny graph
    (Q/DQ for int8) on ``providers``, run once, and its description. Keep the session: the
    model's then reuses the environment, thread pools and provider state it made."""
    import onnxruntime as ort

    quantized = precision == "int8"
    session = ort.InferenceSession(tiny_onnx(quantized), session_options(threads),
                                   providers=providers)
    session.run(None, tiny_feed())
    return session, {"workload": f"tiny ONNX graph{' (Q/DQ int8)' if quantized else ''} "
                                 f"session run", "providers": session.get_providers()}


class OrtRunner(Runner):
    def __init__(self, label, output_names, model_path, providers):
        super().__init__(label, output_names)
        self.model_path = model_path
        self.providers = providers
        self.session = None

    def activate_impl(self):
        import onnxruntime as ort

        options = session_options(self.threads)
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
    requires = (*ONNX_EXPORT, "onnxruntime")
    extra = "ort"

    def prepare(self, subject, precision: str) -> Runner:
        path = ONNX_FOR_PRECISION[precision](subject)
        return OrtRunner(self.label(subject, precision), subject.spec.outputs, path,
                         ["CPUExecutionProvider"])

    def initialise_runtime(self, precision: str, threads: int | None = None,
                           cache_dir=None) -> dict:
        del cache_dir
        self._runtime, done = warm_session(["CPUExecutionProvider"], precision, threads)
        return done

    def floor_runner(self, precision: str, cache_dir) -> Runner:
        floor = self.floor_precision(precision)
        return OrtRunner(f"floor-{self.name}-{floor}", (OUTPUT,),
                         tiny_onnx_file(cache_dir, floor == "int8"), ["CPUExecutionProvider"])

    def floor_precision(self, precision: str) -> str:
        return "int8" if precision == "int8" else "fp32"  # fp16 and int8_dynamic: fp32's graph
