"""The op types of the ONNX graph a backend ran, and how they changed: a count that moved
because the export changed says so (``+2 MatMul, +1 Add``) beside the functions that grew."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def histogram(model: str | None) -> dict[str, int]:
    """Op type -> nodes in the ONNX file ``model`` (subgraphs included); {} for anything that
    is not a readable ONNX file (a backend that runs no ONNX graph)."""
    if not model or Path(model).suffix != ".onnx" or not Path(model).is_file():
        return {}
    import onnx

    try:
        graph = onnx.load(model, load_external_data=False).graph
    except Exception:  # noqa: BLE001 - a diagnostic: no histogram, never a failed verdict
        return {}
    ops: Counter[str] = Counter()

    def walk(g):
        for node in g.node:
            ops[f"{node.domain + '.' if node.domain else ''}{node.op_type}"] += 1
            for attribute in node.attribute:
                for sub in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
                    walk(sub)

    walk(graph)
    return dict(sorted(ops.items()))


def change(old: dict[str, int], new: dict[str, int]) -> str:
    """``+2 MatMul, -1 Gelu``: the op types whose node counts differ, most moved first; ""
    when the graphs have the same histogram or either side has none."""
    if not old or not new:
        return ""
    moved = [(op, new.get(op, 0) - old.get(op, 0)) for op in {*old, *new}]
    moved = sorted((m for m in moved if m[1]), key=lambda m: (-abs(m[1]), m[0]))
    return ", ".join(f"{delta:+d} {op}" for op, delta in moved)
