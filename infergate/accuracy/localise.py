"""Where an output went wrong: the first layer whose activation diverges from PyTorch eager
fp32, named by its torch module path (issue 13, item 4).

How each side's intermediate activations are read:

- PyTorch eager fp32 (the reference): forward hooks on the named modules.
- ONNX backends (ort_cpu, openvino): the dynamo exporter records each node's module scopes
  in its metadata (``pkg.torch.onnx.name_scopes``). A module's output is the last tensor its
  scope produces that a node outside the scope (or the graph's output list) consumes. Those
  tensors become extra graph outputs of the backend's own artifact for the precision
  (Polygraphy's "mark all", one tensor per module rather than every node): ONNX Runtime runs a
  marked copy of the graph, OpenVINO gets them through ``Model.add_outputs``.
- torch.compile: each module compiled on its own, fed the input eager gave it (see
  ``compiled_layers``).

A layer diverges (``first_divergent``) when its error against eager is over what the
combination's final-output tolerance implies, or when it jumps ``GROWTH`` x over every layer
before it: a 0.1 % error in one Linear passes fp32's atol/rtol, yet stands 1000x above the
1e-7 of the layers before it.
"""

from __future__ import annotations

import ast
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infergate.accuracy.precision import tolerance_for
from infergate.progress import step

if TYPE_CHECKING:  # numpy loads when a failure is localised (the plugin imports this module)
    import numpy as np

SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # what the dynamo exporter of torch 2.13 writes
# A layer whose error is this many times the largest before it diverges, whatever the
# tolerance: a bug one layer introduces, not rounding carried along (which grows a few x
# over a network, measured on MiniLM and ResNet-50 at fp32: see README).
GROWTH = 100.0
# Error a layer may have from rounding alone: the unit roundoff of the precision's format.
# The growth rule compares against at least this, so an exact first layer (0 error, e.g. an
# embedding gather) does not make the next one's rounding a "jump".
UNIT_ROUNDOFF = {"fp32": 2.0 ** -24, "fp16": 2.0 ** -11, "bf16": 2.0 ** -8,
                 "int8_dynamic": 2.0 ** -8, "int8": 2.0 ** -8, "fp8": 2.0 ** -4}
# torch.compile localisation compiles module after module (~0.2 s each with inductor's cache
# warm, seconds cold): past this it stops and says how far it got.
COMPILE_BUDGET_S = 300.0
TABLE_ROWS = 12  # the failure text's per-layer table, the middle elided past this


# --- metrics and the divergence rule ---------------------------------------------------------

def rel_rmse(got, want) -> float:
    """RMS of the difference over the RMS of the reference (any shape, any float dtype)."""
    import numpy as np

    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    rmse = math.sqrt(np.mean((got - want) ** 2)) if want.size else 0.0
    scale = math.sqrt(np.mean(want ** 2)) if want.size else 0.0
    if scale > 0:
        return rmse / scale
    return 0.0 if rmse == 0 else math.inf


def sqnr_db(rel: float) -> float:
    """Signal-to-quantization-noise ratio of a relative RMSE (inf when exact)."""
    return math.inf if rel == 0 else -20 * math.log10(rel) if math.isfinite(rel) else -math.inf


def divergence_limit(tolerance) -> float:
    """The relative RMSE a layer may reach under the combination's final-output tolerance:
    the tightest of what each check implies for an output of that error. ``rtol`` bounds
    every element's relative error, hence the RMS one; cosine c allows |a-b|/|b| =
    sqrt(2(1-c)) for equal norms; SQNR s dB allows 10^(-s/20)."""
    implied = []
    if getattr(tolerance, "rtol", None):
        implied.append(tolerance.rtol)
    if getattr(tolerance, "min_cosine", None):
        implied.append(math.sqrt(2 * (1 - tolerance.min_cosine)))
    if getattr(tolerance, "min_sqnr_db", None):
        implied.append(10 ** (-tolerance.min_sqnr_db / 20))
    return min(implied) if implied else 1e-2


def first_divergent(errors: list[float], limit: float, noise: float) -> tuple[int | None, str]:
    """Index of the first error over ``limit`` or ``GROWTH`` x over every earlier one (at
    least ``noise``), and why; (None, "") when none is."""
    worst = 0.0
    for i, error in enumerate(errors):
        if not math.isfinite(error):
            return i, "not finite"
        if error > limit:
            return i, f"over the {limit:.1e} the final-output tolerance implies"
        floor = max(worst, noise)
        if error > GROWTH * floor:
            before = (f"the largest before it ({worst:.1e})" if worst >= noise
                      else f"rounding ({noise:.1e})")
            return i, f"{error / floor:.0f}x {before}"
        worst = max(worst, error)
    return None, ""


# --- the result ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layer:
    module: str  # torch module path ("output <name>" for a model output)
    node: str  # the backend's node that produces it ("" where it has none)
    rel_rmse: float

    @property
    def sqnr_db(self) -> float:
        return sqnr_db(self.rel_rmse)


@dataclass(frozen=True)
class Localisation:
    """The per-layer errors against eager in execution order, and the first that diverges.
    ``str()`` is the text a failure message gets; ``note`` says why there is no answer."""

    label: str
    layers: tuple[Layer, ...] = ()
    first: int | None = None
    why: str = ""
    limit: float | None = None
    method: str = ""
    note: str = ""
    seconds: float = 0.0

    @classmethod
    def failed(cls, label: str, error: str) -> Localisation:
        return cls(label, note=f"localisation failed: {error}")

    @property
    def layer(self) -> Layer | None:
        return None if self.first is None else self.layers[self.first]

    def headline(self) -> str:
        if self.note:
            return self.note
        layer = self.layer
        if layer is None:
            return (f"no layer diverges from PyTorch eager fp32 (limit rel RMSE {self.limit:.1e}"
                    f", or {GROWTH:g}x the largest before it)" if self.layers
                    else "no layer could be matched to a torch module")
        node = f" (onnx node {layer.node})" if layer.node else ""
        before = [x.rel_rmse for x in self.layers[:self.first]]
        agreed = f", <= {max(before):.1e} before it" if before else ""
        return (f"first divergent layer: {layer.module}{node}: rel RMSE {layer.rel_rmse:.1e} "
                f"(SQNR {layer.sqnr_db:.1f} dB){agreed}; {self.why}")

    def table(self) -> list[str]:
        if not self.layers:
            return []
        width = max(len(x.module) for x in self.layers)
        nodes = max(len(x.node) for x in self.layers)
        node = (lambda text: f"  {text:<{nodes}}") if nodes else (lambda text: "")
        lines = [f"  {'module':<{width}}{node('onnx node')}  rel RMSE  SQNR dB"]
        for i in shown_rows(len(self.layers), self.first):
            if i is None:
                lines.append("  ...")
                continue
            x = self.layers[i]
            mark = "  <- first divergent" if i == self.first else ""
            lines.append(f"  {x.module:<{width}}{node(x.node)}  {x.rel_rmse:8.1e}  "
                         f"{x.sqnr_db:7.1f}{mark}")
        return lines

    def __str__(self) -> str:
        where = f" ({self.method}, {self.seconds:.1f} s)" if self.method else ""
        return "\n".join([self.headline() + where, *self.table()])

    def as_dict(self) -> dict:
        layer = self.layer
        return {"first": asdict(layer) if layer else None, "why": self.why, "limit": self.limit,
                "method": self.method, "note": self.note, "seconds": round(self.seconds, 2),
                "layers": [[x.module, x.node, x.rel_rmse] for x in self.layers],
                "message": str(self)}


def shown_rows(count: int, first: int | None, most: int = TABLE_ROWS) -> list[int | None]:
    """Row indices for a table of at most ``most`` lines (None marks an elided run): the
    first three layers, the ones leading up to the divergent one (or to the end) and the one
    after it, and the last."""
    if count <= most:
        return list(range(count))
    focus = count - 1 if first is None else first
    window = range(max(0, focus - (most - 8)), min(count, focus + 2))
    rows: list[int | None] = []
    previous = -1
    for i in sorted({0, 1, 2, *window, count - 1}):
        if i > previous + 1:
            rows.append(None)
        rows.append(i)
        previous = i
    return rows


# --- PyTorch eager: forward hooks ------------------------------------------------------------

@dataclass
class Call:
    """One module's call in eager mode: what it was given and what it returned."""

    args: tuple
    kwargs: dict
    output: object  # the single output tensor


def single_tensor(output):
    """The one tensor a module returned (alone, or the only tensor in a tuple), else None."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list):
        tensors = [o for o in output if isinstance(o, torch.Tensor)]
        return tensors[0] if len(tensors) == 1 else None
    return None


def eager_calls(module, inputs: Mapping, wanted: Callable[[str], bool] = lambda path: True,
                keep_inputs: bool = False) -> tuple[dict[str, Call], object]:
    """Run ``module(**inputs)`` with hooks on its named modules; returns {path: Call} in the
    order the calls finished, and forward's result. Modules called more than once (a shared
    block) and those whose output is not one float tensor are left out: their output has no
    single place to compare. What is kept is cloned when seen: an in-place op later
    (ReLU(inplace=True), ``x += shortcut``) would change it."""
    import torch

    calls: dict[str, Call] = {}
    given: dict[str, tuple] = {}
    repeated: set[str] = set()
    handles = []

    def before(path):
        def record(mod, args, kwargs):
            given[path] = _clone((args, kwargs)) if keep_inputs else ((), {})
        return record

    def after(path):
        def record(mod, args, kwargs, output):
            tensor = single_tensor(output)
            if path in calls or path in repeated:
                calls.pop(path, None)
                repeated.add(path)
            elif tensor is not None and tensor.is_floating_point():
                calls[path] = Call(*given[path], tensor.detach().clone())
        return record

    for path, sub in module.named_modules():
        if path and wanted(path):
            handles.append(sub.register_forward_pre_hook(before(path), with_kwargs=True))
            handles.append(sub.register_forward_hook(after(path), with_kwargs=True))
    try:
        with torch.inference_mode():
            result = module(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return calls, result


def _clone(tree):
    import torch
    from torch.utils._pytree import tree_map

    return tree_map(lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t, tree)


# --- ONNX: module scopes in node metadata ----------------------------------------------------

@dataclass(frozen=True)
class Tap:
    """Where a module's output is in an ONNX graph."""

    module: str
    tensor: str
    node: str


def node_scopes(node) -> set[str]:
    """Module paths a node was exported from: the exporter's name scopes without the root
    ('') and without the last entry (the FX node's own name)."""
    for prop in node.metadata_props:
        if prop.key == SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return set()
            return {s for s in scopes[:-1] if s}
    return set()


def module_taps(graph) -> dict[str, Tap]:
    """{module path: Tap} for every module scope in ``graph`` (an onnx GraphProto): the last
    tensor the scope's nodes produce that is consumed outside it or is a graph output.
    Nodes the exporter did not tag (added by a later transform) belong to no scope."""
    nodes = list(graph.node)
    scopes = [node_scopes(n) for n in nodes]
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    outputs = {o.name for o in graph.output}
    taps: dict[str, Tap] = {}
    for i, node in enumerate(nodes):  # graph order is topological: later wins
        for path in scopes[i]:
            for name in node.output:
                if name and (name in outputs or any(path not in scopes[j]
                                                    for j in consumers.get(name, ()))):
                    taps[path] = Tap(path, name, node.name)
    return taps


def marked_onnx(path: Path, tensors: list[str]) -> bytes:
    """The ONNX graph at ``path`` with ``tensors`` added as graph outputs, serialized; its
    external data stays beside ``path`` (see ``_ort_marked``)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    present = {o.name for o in model.graph.output}
    # Untyped outputs: the runtime infers their type (fp16 inside an fp16 graph).
    model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors if t not in present)
    return model.SerializeToString()


def onnx_taps(path: Path) -> dict[str, Tap]:
    import onnx

    return module_taps(onnx.load(str(path), load_external_data=False).graph)


def compare(calls: dict[str, Call], taps: dict[str, Tap], got: Mapping[str, np.ndarray],
            reference_outputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
            ) -> list[Layer]:
    """One Layer per module both sides have (in eager's order), then the model outputs."""
    import numpy as np

    layers, seen = [], set()
    for path, call in calls.items():
        tap = taps.get(path)
        value = got.get(tap.tensor) if tap else None
        want = call.output.double().numpy()
        if value is None or np.shape(value) != want.shape or not np.isfinite(want).all():
            continue  # not located in the graph (fused away, reshaped): nothing to compare
        if tap.tensor in seen:
            continue  # a container ending in its last child's output: the child's row says it
        seen.add(tap.tensor)
        layers.append(Layer(path, tap.node, rel_rmse(value, want)))
    for name, want in reference_outputs.items():
        if name in outputs and np.issubdtype(np.asarray(want).dtype, np.floating):
            layers.append(Layer(f"output {name}", "", rel_rmse(outputs[name], want)))
    return layers


def _onnx_layers(subject, runner, feed, run_marked) -> list[Layer]:
    taps = onnx_taps(runner.model_path)
    calls, result = eager_calls(subject.module, _torch_feed(feed), wanted=taps.__contains__)
    wanted = [taps[p].tensor for p in calls if p in taps]
    got = run_marked(runner, wanted, feed)
    return compare(calls, taps, got, _named(subject, result), got)


def _ort_marked(runner, tensors: list[str], feed) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    names = [*dict.fromkeys([*tensors, *runner.output_names])]
    options = ort.SessionOptions()
    # From bytes, ORT reads external data from this folder: the artifact's own, untouched
    # (a marked copy elsewhere may not point into it: ORT rejects paths leaving its folder).
    options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                     str(Path(runner.model_path).parent))
    session = ort.InferenceSession(marked_onnx(Path(runner.model_path), names), options,
                                   providers=runner.providers)
    return dict(zip(names, session.run(names, dict(feed)), strict=True))


def _openvino_marked(runner, tensors: list[str], feed) -> dict[str, np.ndarray]:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(runner.model_path))
    for name in tensors:
        try:
            model.add_outputs(name)
        except RuntimeError:
            pass  # OpenVINO's reader dropped or renamed it: that module is left out
    compiled = core.compile_model(model, "CPU", runner.config)
    results = compiled.create_infer_request().infer(dict(feed))
    got = {}
    for port in compiled.outputs:
        for name in port.get_names():
            got[name] = results[port]
    return got


# --- torch.compile: each module compiled on its own ------------------------------------------

def compiled_layers(module, feed, precision: str, limit: float,
                    noise: float) -> tuple[list[Layer], str]:
    """Each module compiled on its own (inductor, on the backend's device) and fed the exact
    input eager gave it; its output against eager's. Leaves first, in execution order, then
    the modules one level up, and so on, until a module diverges or ``COMPILE_BUDGET_S``
    runs out. Returns the layers and what was left undone ("" when nothing was).

    Why not capture intermediates inside one compiled graph: returning them as extra outputs
    (or hooks, which break dynamo's graph) changes what inductor fuses, so the model measured
    would not be the model under test. Compiled alone, a module's error is its own, not
    inherited from earlier layers, and a module that diverges only when compiled shows
    directly. What this cannot see: a divergence that needs fusion across module boundaries;
    then no module diverges alone, and the result says so."""
    import torch

    from infergate.backends.torch_compile import compile_device
    from infergate.backends.torch_eager import convert_module, torch_dtype

    calls, _ = eager_calls(module, _torch_feed(feed), keep_inputs=True)
    modules = dict(module.named_modules())
    dtype, device = torch_dtype(precision), compile_device()
    levels = _by_height(modules, calls)
    deadline = time.monotonic() + COMPILE_BUDGET_S
    layers: list[Layer] = []
    for path in (p for level in levels for p in level):
        if time.monotonic() > deadline:
            return layers, (f"stopped at its {COMPILE_BUDGET_S:g} s budget after {len(layers)} "
                            f"of {len(calls)} modules")
        torch._dynamo.reset()  # every compile fresh: no recompile limit falls back to eager
        compiled = torch.compile(convert_module(modules[path], precision).to(device),
                                 backend="inductor")
        args, kwargs = _cast((calls[path].args, calls[path].kwargs), dtype, device)
        with torch.inference_mode():
            out = single_tensor(compiled(*args, **kwargs))
        layers.append(Layer(path, "", rel_rmse(out.double().cpu(), calls[path].output.double())))
        if first_divergent([x.rel_rmse for x in layers], limit, noise)[0] is not None:
            break
    return layers, ""


def _by_height(modules: dict, calls: dict) -> list[list[str]]:
    """Paths eager called, grouped by height (leaves 0, their parents 1, ...), each group in
    execution order."""
    def height(path):
        children = [f"{path}.{name}" for name, _ in modules[path].named_children()]
        return 1 + max((height(c) for c in children), default=-1)

    levels: dict[int, list[str]] = {}
    for path in calls:
        levels.setdefault(height(path), []).append(path)
    return [levels[h] for h in sorted(levels)]


def _cast(tree, dtype, device):
    """Floating tensors to ``dtype``, every tensor to ``device``."""
    import torch
    from torch.utils._pytree import tree_map

    return tree_map(lambda t: t.to(device, dtype if t.is_floating_point() else t.dtype)
                    if isinstance(t, torch.Tensor) else t, tree)


# --- entry point -----------------------------------------------------------------------------

def _torch_feed(feed):
    import numpy as np
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()}


def _named(subject, result) -> dict[str, np.ndarray]:
    from infergate.backends.torch_eager import named_outputs

    outputs = named_outputs(subject.spec.name, subject.spec.outputs, result)
    return {k: v.detach().double().numpy() if v.is_floating_point() else v.numpy()
            for k, v in outputs.items()}


def _artifact(runner) -> str:
    """The artifact's kind in the cache ("onnx", "onnx_fp16", "onnx_int8", ...)."""
    return Path(runner.model_path).parent.parent.name


def _ort(subject, backend, precision, feed, limit, noise):
    runner = backend.prepare(subject, precision)
    return (_onnx_layers(subject, runner, feed, _ort_marked),
            f"ONNX Runtime, module outputs marked in the {_artifact(runner)} graph")


def _openvino(subject, backend, precision, feed, limit, noise):
    runner = backend.prepare(subject, precision)
    return (_onnx_layers(subject, runner, feed, _openvino_marked),
            f"OpenVINO, module outputs added to the {_artifact(runner)} graph")


def _torch_compile(subject, backend, precision, feed, limit, noise):
    from infergate.backends.torch_compile import use_inductor_cache

    use_inductor_cache(subject.store.root)
    layers, undone = compiled_layers(subject.module, feed, precision, limit, noise)
    return layers, "; ".join(filter(None, ["each module compiled alone on eager's input",
                                           undone]))


# backend name -> (subject, backend, precision, feed, limit, noise) -> (layers, method)
LOCALISERS = {"ort_cpu": _ort, "openvino": _openvino, "torch_compile": _torch_compile}


def not_available(backend, label: str) -> Localisation | None:
    """The answer for a backend localisation does not cover, else None."""
    if backend.name in LOCALISERS:
        return None
    return Localisation(label, note=f"localisation not available for {backend.name}")


def localise(subject, backend, precision: str, feed: Mapping[str, np.ndarray]) -> Localisation:
    """The first layer of ``subject`` (a ModelUnderTest) where ``backend`` at ``precision``
    diverges from PyTorch eager fp32 on ``feed``. Raises what the frameworks raise."""
    start = time.perf_counter()
    label = backend.label(subject, precision)
    unavailable = not_available(backend, label)
    if unavailable:
        return unavailable
    localiser = LOCALISERS[backend.name]
    tolerance, _ = tolerance_for(subject.spec.tolerances, backend.name, precision)
    limit, noise = divergence_limit(tolerance), UNIT_ROUNDOFF.get(precision, 2.0 ** -24)
    with step(f"{label}: localising the first divergent layer"):
        layers, method = localiser(subject, backend, precision, feed, limit, noise)
    first, why = first_divergent([x.rel_rmse for x in layers], limit, noise)
    return Localisation(label, tuple(layers), first, why, limit, method,
                        seconds=time.perf_counter() - start)
