"""Which hardware a baseline belongs to, named by what decides which kernels run.

Hypervisors mask the CPU's model name (Zen 4 and Zen 5 runners both say "AMD EPYC"), so the
id is built from the vendor, family, model and stepping, the ISA features that oneDNN, MLAS
and OpenVINO dispatch on, the cache size the kernel reports, the cores this process may use
and the GPU with its compute capability. ``INFERGATE_CPUINFO=<file>`` reads that file instead
of /proc/cpuinfo, so the id of another CPU can be checked here.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from infergate import environment

CPUINFO_ENV = "INFERGATE_CPUINFO"
# ISA features the inference libraries choose kernels by (recorded in full in the components).
DISPATCH_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                  "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
                  "amx_bf16", "amx_int8")
# The most capable feature names the id; the rest are in the components.
ISA_TIERS = (("amx_bf16", "amx"), ("avx512_bf16", "avx512bf16"), ("avx512_vnni", "avx512vnni"),
             ("avx512f", "avx512"), ("avx2", "avx2"), ("sse4_2", "sse42"))


def _amd_uarch(family: int, model: int) -> str | None:
    if family == 0x17:
        return "zen2" if model >= 0x30 else "zen"
    if family == 0x19:
        zen4 = 0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF
        return "zen4" if zen4 else "zen3"
    if family == 0x1A:
        return "zen5"
    return None


# Intel server cores by family-6 model number; others are named by numbers alone.
_INTEL_MODELS = {0x55: "skylake-sp", 0x6A: "icelake-sp", 0x8F: "sapphirerapids",
                 0xCF: "emeraldrapids", 0xAD: "graniterapids"}


def _uarch(vendor: str, family: int, model: int) -> str | None:
    if vendor == "amd":
        return _amd_uarch(family, model)
    if vendor == "intel" and family == 6:
        return _INTEL_MODELS.get(model)
    return None


def read_cpuinfo(path: str | Path | None = None) -> tuple[dict[str, str], str]:
    """The first processor block of ``path``, else ``$INFERGATE_CPUINFO``, else /proc/cpuinfo,
    and the path read."""
    named = path or os.environ.get(CPUINFO_ENV)
    path = str(named or "/proc/cpuinfo")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        if named:
            source = f"{CPUINFO_ENV}={path}" if path == os.environ.get(CPUINFO_ENV) else path
            raise ValueError(f"{source}: cannot read it: {exc}") from None
        return {}, path
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    return fields, path


def _int(fields: dict[str, str], name: str) -> int | None:
    try:
        return int(fields[name])
    except (KeyError, ValueError):
        return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def identify(cpuinfo: dict[str, str], cores: int, gpu: dict | None) -> dict:
    """The machine id and its components from one cpuinfo block, cores and GPU."""
    vendor = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(
        cpuinfo.get("vendor_id", ""), _slug(cpuinfo.get("vendor_id", "")) or "cpu")
    family, model, stepping = (_int(cpuinfo, k) for k in ("cpu family", "model", "stepping"))
    flags = set(cpuinfo.get("flags", "").split())
    isa = next((tag for flag, tag in ISA_TIERS if flag in flags), "baseline")
    parts = [vendor]
    uarch = _uarch(vendor, family, model) if family is not None and model is not None else None
    if uarch:
        parts.append(uarch)
    if family is not None:
        parts.append(f"f{family}m{model}" + (f"s{stepping}" if stepping is not None else ""))
    else:  # no x86 fields (another architecture): the model-name string is all there is
        parts.append(_slug(cpuinfo.get("model name", "") or environment.cpu_model()))
    gpu_part = f"{_slug(gpu['name'])}-sm{gpu['capability']}" if gpu else "nogpu"
    if gpu and gpu.get("driver"):
        # The driver's branch: its JIT, its context's size (NVML's figures) and the CUDA
        # versions it runs move device time and memory; point releases are in the components.
        gpu_part += f"-drv{gpu['driver'].split('.')[0]}"
    parts += [isa, f"{cores}c", gpu_part]
    return {
        "id": "-".join(parts),
        "vendor": cpuinfo.get("vendor_id"),
        "family": family, "model": model, "stepping": stepping,
        "model_name": cpuinfo.get("model name"),
        "uarch": uarch,
        "isa": sorted(flags & set(DISPATCH_FLAGS)),
        "cache_size": cpuinfo.get("cache size"),
        "cores": cores,
        "gpu": gpu,
    }


def legacy_id(cpuinfo: dict[str, str], cores: int, gpu_name: str | None) -> str:
    """The id baselines had before this module: model name, cores, GPU name. It cannot tell
    CPU generations apart (both AMD runners were ``amd-epyc-2c-nogpu``)."""
    cpu = cpuinfo.get("model name") or environment.cpu_model()
    return _slug(f"{cpu} {cores}c {gpu_name or 'nogpu'}")


def gpu() -> dict | None:
    """The first CUDA device's name, compute capability ("90" for 9.0) and NVIDIA driver
    version (None where NVML cannot say), or None; asks torch only when it is already
    imported with CUDA built in."""
    name = environment.gpu_model()
    if name is None:
        return None
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return {"name": name, "capability": f"{major}{minor}", "driver": nvidia_driver()}


def nvidia_driver() -> str | None:
    """The NVIDIA driver version from NVML (package ``nvidia-ml-py``), e.g. "580.65.06"."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def this_machine() -> dict:
    """This machine's id and components (``source`` says which cpuinfo was read)."""
    cpuinfo, source = read_cpuinfo()
    device = gpu()
    identity = identify(cpuinfo, environment.cpu_count(), device)
    return {**identity, "legacy_id": legacy_id(cpuinfo, environment.cpu_count(),
                                               device and device["name"]),
            "cpuinfo": source}


def describe(identity: dict) -> str:
    """One line for messages: why this machine got this id."""
    isa = ", ".join(f for f in identity["isa"] if f.startswith(("avx512", "amx", "avx_vnni")))
    gpu_text = (f"{identity['gpu']['name']} sm{identity['gpu']['capability']}"
                + (f" driver {identity['gpu']['driver']}" if identity["gpu"].get("driver")
                   else "") if identity.get("gpu") else "no GPU")
    return (f"{identity['vendor']} family {identity['family']} model {identity['model']} "
            f"stepping {identity['stepping']} ({identity['model_name']!r}), "
            f"{isa or 'no AVX-512'}, cache {identity['cache_size']}, {identity['cores']} cores, "
            f"{gpu_text}; read from {identity.get('cpuinfo', '/proc/cpuinfo')}")
