"""PyTorch eager on a CUDA GPU, with TF32 pinned off so fp32 is a true fp32 reference."""

from __future__ import annotations

from infergate.backends.base import Runner
from infergate.backends.cuda import (
    TF32_OFF,
    CudaBackend,
    DeviceFeedCache,
    device_facts,
    set_tf32,
    tf32_state,
)
from infergate.backends.device_time import DeviceFigures
from infergate.backends.gpu_memory import nvml_process_mb, torch_cuda_mb
from infergate.backends.torch_eager import (
    TorchRunner,
    convert_module,
    host_tensor,
    named_outputs,
    tiny_module,
    to_torch,
    torch_dtype,
)
from infergate.build.model_outputs import check_inputs


class TorchCudaRunner(DeviceFigures, TorchRunner):
    """Eager (or compiled) module on ``cuda``: inputs copied to the device once per feed,
    outputs returned as host arrays (floats as float32); ``synchronize()`` waits for the GPU."""

    synchronization = ("implicit: copying the outputs to the host waits for the current "
                       "stream; device time brackets the forward only (the outputs' copy "
                       "and cast are host time)")
    allocator_figure = "cuda_max_allocated_mb"

    def __init__(self, label, output_names, module, input_dtype):
        super().__init__(label, output_names, module, input_dtype)
        self._inputs = DeviceFeedCache(self._upload)
        self._tf32_before = None

    def _upload(self, feed):
        return {name: t.to("cuda") for name, t in to_torch(feed, self.input_dtype).items()}

    def activate_impl(self):
        import torch

        super().activate_impl()
        # Process-wide switches: pinned while this runner is active, restored after.
        self._tf32_before = set_tf32(TF32_OFF)
        self.settings.update(device_facts())
        self.settings.update({f"tf32.{k}": v for k, v in tf32_state().items()})
        self.settings["inputs"] = "copied to the device once per feed (not timed)"
        # Peaks from here on: this runner's warm-up (torch_compile's compile too) and runs.
        torch.cuda.reset_peak_memory_stats()

    def run_impl(self, feed):
        import torch

        inputs = self._inputs.get(feed)
        self._device_begin()
        with torch.inference_mode():
            try:
                outputs = self.module(**inputs)
            except TypeError:
                check_inputs(self.label, self.module, feed, {})
                raise
        self._device_end()
        return {name: host_tensor(out.cpu()).numpy()
                for name, out in named_outputs(self.label, self.output_names, outputs).items()}

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize()

    def memory_stats(self) -> dict[str, float]:
        return {**torch_cuda_mb(), **nvml_process_mb()}

    def deactivate_impl(self):
        import torch

        super().deactivate_impl()
        self._inputs.clear()
        if self._tf32_before is not None:
            set_tf32(self._tf32_before)
            self._tf32_before = None
        torch.cuda.empty_cache()


class TorchCuda(CudaBackend):
    name = "torch_cuda"
    precisions = ("fp32", "fp16", "bf16")
    requires = ("torch",)

    def prepare(self, subject, precision: str) -> Runner:
        module = convert_module(subject.module, precision).to("cuda")
        return TorchCudaRunner(self.label(subject, precision), subject.spec.outputs, module,
                               torch_dtype(precision))

    def initialise_runtime(self, precision: str, threads: int | None = None,
                           cache_dir=None) -> dict:
        """The CUDA context, the caching allocator and cuBLAS, by a tiny Linear + ReLU at
        ``precision`` on the device: the context alone is hundreds of MB of host memory that
        no model should be charged for."""
        import torch

        del cache_dir
        if threads is not None:
            torch.set_num_threads(threads)
        module, x = tiny_module(precision)
        with torch.inference_mode():
            module.to("cuda")(x.to("cuda"))
        torch.cuda.synchronize()
        return {"workload": f"tiny Linear+ReLU at {precision} on cuda"}
