"""OpenVINO, CPU plugin.

On CPUs with avx512_bf16/AMX the plugin silently runs bf16 unless INFERENCE_PRECISION_HINT
is f32 (measured on this machine: 0.14 max error on ResNet-50 logits), so every precision
pins the hint explicitly and records it.
"""

from __future__ import annotations

from infergate.backends.base import ONNX_EXPORT, Backend, Runner, RunnerError
from infergate.backends.warmup import OUTPUT, tiny_feed, tiny_onnx, tiny_onnx_file
from infergate.build.onnx_transforms import static_int8_onnx

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


# ONNX TensorProto element types by kind: a port matched by position must be of the same kind
# (OpenVINO may run f16 as f32, but never turns an index into a float).
_ONNX_KINDS = {1: "float", 10: "float", 11: "float", 16: "float", 2: "int", 3: "int", 4: "int",
               5: "int", 6: "int", 7: "int", 12: "int", 13: "int", 9: "bool"}


def declared_outputs(model_path) -> list[tuple[int | None, str | None]]:
    """Each ONNX graph output's declared (rank, kind), None where undeclared, in order."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [(len(o.type.tensor_type.shape.dim) if o.type.tensor_type.HasField("shape") else None,
             _ONNX_KINDS.get(o.type.tensor_type.elem_type)) for o in graph.output]


def _kind(port) -> str:
    name = port.get_element_type().get_type_name()  # "f32", "i64", "boolean", ...
    return "bool" if name.startswith("bool") else "float" if name[0] in "fb" else "int"


def match_outputs(label: str, wanted: tuple[str, ...], ports: list,
                  declared: list[tuple[int | None, str | None]]) -> dict:
    """Spec output name -> compiled output port. By any of a port's tensor names (one port
    can carry several once OpenVINO folds an Identity; ``get_any_name`` may pick the other);
    where a name is gone, by position, which must agree with the graph's declared rank and
    element kind (float, int, bool)."""
    found = {}
    for name in wanted:
        port = next((p for p in ports if name in p.get_names()), None)
        if port is not None:
            found[name] = port
    missing = [name for name in wanted if name not in found]
    if not missing:
        return found
    names = [sorted(p.get_names()) for p in ports]
    if len(ports) != len(wanted):
        raise RunnerError(f"{label}: outputs {missing} match no compiled output by name, and "
                          f"position cannot stand in: the spec has {len(wanted)} outputs "
                          f"{list(wanted)}, the compiled model {len(ports)} {names}")
    for i, name in enumerate(wanted):
        if name in missing:
            port = ports[i]
            rank, kind = declared[i] if i < len(declared) else (None, None)
            got = (port.get_partial_shape().rank.get_length(), _kind(port))
            if (rank is not None and got[0] != rank) or (kind is not None and got[1] != kind):
                raise RunnerError(
                    f"{label}: output {name!r} (position {i}) has no name in the compiled "
                    f"model, and its port there {names[i]} is rank {got[0]} {got[1]}, not the "
                    f"graph's rank {rank} {kind}")
            found[name] = port
    return found


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
        self._ports = match_outputs(self.label, self.output_names, list(compiled.outputs),
                                    declared_outputs(self.model_path))
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
        return {name: results[port] for name, port in self._ports.items()}

    def deactivate_impl(self):
        self.request = None
        self._ports = {}


class OpenVinoCpu(Backend):
    name = "openvino"
    precisions = tuple(PLAN)
    requires = (*ONNX_EXPORT, "openvino")
    precision_requires = {"int8": ("onnxruntime",)}  # ORT's quantizer makes the QDQ graph
    extra = "openvino"
    uncountable_at = {"bf16": "valgrind's CPU has no AVX512-BF16 or AMX, so OpenVINO runs "
                              "the bf16 hint as f32 there: the count would be openvino-fp32's"}

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

    def floor_runner(self, precision: str, cache_dir) -> Runner:
        return OpenVinoRunner(f"floor-{self.name}-{precision}", (OUTPUT,),
                              tiny_onnx_file(cache_dir, precision == "int8"),
                              {"INFERENCE_PRECISION_HINT": PLAN[precision][1]})
