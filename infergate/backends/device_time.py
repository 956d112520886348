"""Device time of a GPU runner's calls, from CUDA events on the stream its kernels run on.

A pair of events brackets the device work a runner enqueues in one call; their elapsed time
is read once the call has synchronised, outside the timed region. The figure is the GPU
timeline between the two events: kernel time plus any gaps where the GPU waited for the host
to launch the next kernel. Host time minus device time is what the call spends on the host
alone (Python, framework dispatch, copies the events leave out). A launch-bound model shows
device close to host: its GPU idles between launches inside the bracket.

How each backend synchronises, and so what its host time holds, is stated by its runner's
``synchronization`` (recorded in the probe's settings).
"""

from __future__ import annotations


class CudaEventTimer:
    """``begin()`` / ``end()`` around one call's device work; ``take_ms()`` after the call
    returns gives the elapsed milliseconds of every pair recorded since the last take.

    ``stream`` is a ``torch.cuda.Stream`` (or ``ExternalStream``) or None for the current
    stream; ``event`` makes an event (``torch.cuda.Event(enable_timing=True)`` by default,
    injectable so the bookkeeping is tested without CUDA).
    """

    def __init__(self, stream=None, event=None):
        if event is None:
            import torch

            def event():
                return torch.cuda.Event(enable_timing=True)
        self.stream = stream
        self._event = event
        self._pending: list[tuple] = []
        self._open = None

    def begin(self) -> None:
        if self._open is not None:
            raise RuntimeError("CudaEventTimer.begin() twice without end()")
        self._open = self._event()
        self._open.record(self.stream)

    def end(self) -> None:
        if self._open is None:
            raise RuntimeError("CudaEventTimer.end() without begin()")
        stop = self._event()
        stop.record(self.stream)
        self._pending.append((self._open, stop))
        self._open = None

    def take_ms(self) -> list[float]:
        """Waits for the last end event, then returns and forgets every pair's elapsed ms."""
        if self._open is not None:
            raise RuntimeError("CudaEventTimer.take_ms() between begin() and end()")
        if self._pending:
            self._pending[-1][1].synchronize()
        times = [start.elapsed_time(stop) for start, stop in self._pending]
        self._pending.clear()
        return times


class DeviceFigures:
    """What a GPU runner tells the probe beyond host time and RSS: the stream its kernels
    run on, how a call waits for the device, which ``memory_stats()`` figure is its
    allocator's peak, and the bracket its ``run_impl`` puts around the device work it
    enqueues (recorded only while the probe sets ``timer``)."""

    # What a call's host time holds, i.e. how the runner waits for the device.
    synchronization = ""
    # The memory_stats() key of the framework allocator's peak (None: not exposed).
    allocator_figure: str | None = None
    timer: CudaEventTimer | None = None

    def device_stream(self):
        """The stream this runner's kernels run on (None: torch's current stream)."""
        return None

    def device_timer(self) -> CudaEventTimer:
        """The timer the probe sets while it measures device time: CUDA events on
        ``device_stream()``."""
        return CudaEventTimer(self.device_stream())

    def _device_begin(self) -> None:
        if self.timer is not None:
            self.timer.begin()

    def _device_end(self) -> None:
        if self.timer is not None:
            self.timer.end()
