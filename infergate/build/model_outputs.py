"""What a model's ``forward`` returns, by the names its ModelSpec declares."""

from __future__ import annotations

from infergate.spec import SpecError


class OutputsMismatch(SpecError):
    """``forward`` returned other outputs than the ModelSpec declares: the spec's error, which
    the plugin turns into one usage error naming the model file (``plugin/spec_errors``)."""

    KIND = "OutputsMismatch"  # how a worker process reports it (its type's name)

    @staticmethod
    def detail(message: str) -> str:
        """The message without the combination label it starts with."""
        return message.split(": ", 1)[-1]


def flatten_outputs(outputs, prefix: str = "") -> list[tuple[str, object]]:
    """``forward``'s result as (name, leaf) pairs in the order torch's exporters flatten it:
    a dict's leaves named by their keys, a tuple's by position, nested levels joined with "."
    ({"logits": t, "hidden": (a, b)} -> logits, hidden.0, hidden.1)."""
    if isinstance(outputs, dict):
        items = [(str(k), v) for k, v in outputs.items()]
    elif isinstance(outputs, tuple | list):
        items = [(str(i), v) for i, v in enumerate(outputs)]
    else:
        return [(prefix, outputs)]
    return [pair for key, value in items
            for pair in flatten_outputs(value, f"{prefix}.{key}" if prefix else key)]


def _named_by_key(outputs) -> bool:
    return isinstance(outputs, dict) or (isinstance(outputs, tuple | list)
                                         and any(_named_by_key(o) for o in outputs))


def named_outputs(label: str, names: tuple[str, ...], outputs) -> dict:
    """``forward``'s result by the spec's output names. A tensor, or a tuple (nested too) of
    tensors, is taken in ``ModelSpec.outputs`` order; a dict anywhere in it names its leaves
    (flattened as ``flatten_outputs`` names them), which must be exactly the declared names.
    Anything else is one clear error (a tensor would otherwise be zipped row by row)."""
    import torch

    leaves = flatten_outputs(outputs)
    tensors = all(isinstance(v, torch.Tensor) for _, v in leaves)
    if tensors and _named_by_key(outputs) and sorted(n for n, _ in leaves) == sorted(names):
        found = dict(leaves)
        return {name: found[name] for name in names}
    if tensors and not _named_by_key(outputs) and len(leaves) == len(names):
        return dict(zip(names, (v for _, v in leaves), strict=True))
    if isinstance(outputs, torch.Tensor):
        got = f"one tensor of shape {tuple(outputs.shape)}"
    elif not tensors:
        odd = next((n or "the result", v) for n, v in leaves if not isinstance(v, torch.Tensor))
        got = f"{type(odd[1]).__name__} at {odd[0]!r}, not a tensor"
    elif _named_by_key(outputs):
        got = f"outputs named {[n for n, _ in leaves]}"
    else:
        got = f"a {type(outputs).__name__} of {len(leaves)} tensors"
    raise OutputsMismatch(f"{label}: the model's forward returned {got}; its ModelSpec "
                          f"declares outputs {list(names)}: forward must return one tensor, a "
                          f"tuple of tensors in that order, or a dict with exactly those names "
                          f"(nested levels joined with '.')")


def export_order(label: str, names: tuple[str, ...], outputs) -> list[str]:
    """The declared names in the order torch's exporters flatten ``outputs`` (a dict's own
    order, where the spec may list them otherwise), checked as ``named_outputs`` checks them."""
    named_outputs(label, names, outputs)
    if _named_by_key(outputs):
        return [name for name, _ in flatten_outputs(outputs)]
    return list(names)
