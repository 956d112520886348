"""Where an instruction count moved: callgrind's per-function totals, read with valgrind's own
``callgrind_annotate``, named by function and library, and the functions that changed most.

The performance counterpart of accuracy's first divergent layer: a count that grew by 4 % says
that the model got dearer; "+31k in MlasSgemmKernel (onnxruntime)" says where.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

# A function's share of the call below which it is folded into "other": the table stays small
# enough to keep in a baseline entry, and what moves a count by a threshold is never below it.
KEEP_SHARE = 0.0005
KEEP_MOST = 60
OTHER = "(other functions)"
LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([\s\d.]+%\)\s+)?(\S.*?)\s*$")
OBJECT = re.compile(r"\s\[(/[^\]]+)\]$")


def library(path: str) -> str:
    """A shared object's library name: the site-packages distribution it lives in
    (``onnxruntime``, ``torch``, ``openvino``) or its file name's stem (``libc``)."""
    parts = Path(path).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1].removesuffix(".libs")
    return re.sub(r"(\.cpython.*)?\.so(\.[\d.]+)?$", "", Path(path).name)


def name_of(raw: str) -> str:
    """``file:function [object]`` as ``function (library)``; a stripped function as its
    address in its object (``onnxruntime_pybind11_state+0x191cbc0 (onnxruntime)``), code
    generated at run time (OpenVINO's JIT kernels) as ``jit+0x1d861000 (generated code)``."""
    found = OBJECT.search(raw)
    obj = found.group(1) if found else ""
    generated = raw.endswith(" [???]")
    raw = raw[:found.start()] if found else raw.removesuffix(" [???]")
    function = raw.rsplit(":", 1)[-1].strip() if ":" in raw else raw.strip()
    function = re.sub(r"'\d+$", "", function)  # callgrind's recursion depth: one function
    address = re.fullmatch(r"0x[0-9a-fA-F]+", function)
    if address and generated:
        return f"jit+{hex(int(function, 16))} (generated code)"
    if address and obj:
        stem = re.sub(r"(\.cpython.*)?\.so.*$", "", Path(obj).name)
        function = f"{stem}+{hex(int(function, 16))}"
    return f"{function} ({library(obj)})" if obj else function


def table(dump: Path) -> dict[str, int]:
    """Self instructions per function in one callgrind dump, functions under ``KEEP_SHARE``
    of the total folded into ``OTHER``; {} where ``callgrind_annotate`` is missing or fails."""
    exe = shutil.which("callgrind_annotate")
    if exe is None:
        return {}
    proc = subprocess.run([exe, "--threshold=100", "--auto=no", "--inclusive=no", str(dump)],
                          capture_output=True, text=True)
    if proc.returncode:
        return {}
    total, per = 0, {}
    for line in proc.stdout.splitlines():
        found = LINE.match(line)
        if not found:
            continue
        count, what = int(found.group(1).replace(",", "")), found.group(2)
        if what.startswith("PROGRAM TOTALS"):
            total = count
        elif ":" in what or OBJECT.search(what):
            name = name_of(what)
            per[name] = per.get(name, 0) + count
    ranked = sorted(per.items(), key=lambda kv: -kv[1])[:KEEP_MOST]
    kept = {k: v for k, v in ranked if total and v >= KEEP_SHARE * total}
    rest = total - sum(kept.values())
    return kept | ({OTHER: rest} if rest else {})


def changed(old: dict[str, int], new: dict[str, int], n: int = 3) -> list[tuple[str, int]]:
    """The ``n`` functions whose counts moved most (either way), with their deltas; a function
    kept on one side only counts as 0 on the other (it was under ``KEEP_SHARE`` there), and
    what moved among the folded ones shows as ``OTHER``."""
    deltas = [(name, new.get(name, 0) - old.get(name, 0)) for name in {*old, *new}]
    return sorted((d for d in deltas if d[1]), key=lambda d: (-abs(d[1]), d[0]))[:n]


def describe(moves: list[tuple[str, int]]) -> str:
    """``+31.2k MlasSgemmKernel (onnxruntime), -2.1k memset (libc)``."""
    return ", ".join(f"{_k(delta)} {name}" for name, delta in moves)


def _k(delta: int) -> str:
    return f"{delta:+d}" if abs(delta) < 1000 else f"{delta / 1000:+.1f}k"
