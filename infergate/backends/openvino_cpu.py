"""OpenVINO, CPU plugin.

On CPUs with avx512_bf16/AMX the plugin silently runs bf16 unless INFERENCE_PRECISION_HINT
is f32 (measured on this machine: 0.14 max error on ResNet-50 logits), so every precision
pins the hint explicitly and records it.
"""

from __future__ import annotations

from infergate.backends.base import Backend, Runner
from infergate.backends.warmup import tiny_feed, tiny_onnx
from infergate.onnx_transforms import static_int8_onnx

# precision -> (ONNX to read, INFERENCE_PRECISION_HINT). int8 comes from the QDQ graph;
# the layers left unquantized run in f32.
PLAN = {
    "fp32": (lambda subject: subject.onnx_path, "f32"),
    "bf16": (lambda subject: subject.onnx_path, "bf16"),
    "int8": (static_int8_onnx, "f32"),
}


def compile_config(config: dict, threads: int | None) -> dict:
    """What ``compile_model`` gets: the precision's config, plus the thread count if pinned."""
    return {**config, "INFERENCE_NUM_THREADS": threads} if threads is not None else dict(config)


class OpenVinoRunner(Runner):
    def __init__(self, label, output_names, model_path, config):
        super().__init__(label, output_names)
        self.model_path = model_path
        self.config = dict(config)
        self.request = None

    def activate_impl(self):
        import openvino as ov

        compiled = ov.Core().compile_model(str(self.model_path), "CPU",
                                           compile_config(self.config, self.threads))
        self.request = compiled.create_infer_request()
        self._ports = {out.get_any_name(): out for out in compiled.outputs}
        self.settings = {
            **self.config,
            # What the plugin actually runs ("f32", "bf16"), which must equal the request.
            "INFERENCE_PRECISION_HINT(effective)":
                compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "INFERENCE_NUM_THREADS": compiled.get_property("INFERENCE_NUM_THREADS"),
            "model": str(self.model_path),
        }

    def run_impl(self, feed):
        results = self.request.infer(dict(feed))
        return {name: results[port] for name, port in self._ports.items()
                if name in self.output_names}

    def deactivate_impl(self):
        self.request = None
        self._ports = {}


class OpenVinoCpu(Backend):
    name = "openvino"
    precisions = tuple(PLAN)
    requires = ("openvino",)
    precision_requires = {"int8": ("onnxruntime",)}  # ORT's quantizer makes the QDQ graph

    def prepare(self, subject, precision: str) -> Runner:
        onnx_for, hint = PLAN[precision]
        return OpenVinoRunner(self.label(subject, precision), subject.spec.outputs,
                              onnx_for(subject), {"INFERENCE_PRECISION_HINT": hint})

    def initialise_runtime(self, precision: str, threads: int | None = None,
                           cache_dir=None) -> dict:
        """A core with the CPU plugin loaded, and the tiny graph read through the ONNX
        frontend, compiled with the precision's config and run. Measured on an Intel Xeon
        2-core guest: 40 MB - 9 MB to load the plugin, 31 MB for the first compile and run,
        four fifths of it the plugin's and libopenvino's code paged in - after which the
        small models cost 3-7 MB. The compiled model is kept: OpenVINO frees 5 MB of executor
        state with the last compiled model, and the model's compile would pay it again."""
        import openvino as ov

        del cache_dir
        config = compile_config({"INFERENCE_PRECISION_HINT": PLAN[precision][1]}, threads)
        core = ov.Core()
        quantized = precision == "int8"
        compiled = core.compile_model(core.read_model(tiny_onnx(quantized)), "CPU", config)
        request = compiled.create_infer_request()
        request.infer(tiny_feed())
        self._runtime = (core, compiled, request)
        return {"workload": f"tiny ONNX graph{' (Q/DQ int8)' if quantized else ''} read, "
                            f"compiled on CPU and run", "config": config}
