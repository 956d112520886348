"""What a model's ``forward`` returns, by the names its ModelSpec declares."""

from __future__ import annotations

from infergate.spec import SpecError


class ForwardMismatch(SpecError):
    """The ModelSpec and the model's ``forward`` disagree, which only building or running the
    model shows: the spec's error, which the plugin turns into one usage error naming the
    model file and the field (``plugin/spec_errors``)."""

    KIND = ""  # how a worker process reports it (its type's name)
    FIELD = ""  # the ModelSpec field the usage error names

    @staticmethod
    def detail(message: str) -> str:
        """The message without the combination label it starts with."""
        return message.split(": ", 1)[-1]


class OutputsMismatch(ForwardMismatch):
    """``forward`` returned other outputs than the ModelSpec declares."""

    KIND, FIELD = "OutputsMismatch", "outputs"


class InputsMismatch(ForwardMismatch):
    """``make_inputs`` (or ``dynamic_axes``) names inputs ``forward`` does not take."""

    KIND, FIELD = "InputsMismatch", "make_inputs"


MISMATCHES = {cls.KIND: cls for cls in (OutputsMismatch, InputsMismatch)}


def check_inputs(label: str, module, names, dynamic_axes: dict) -> None:
    """The feed's names against ``forward``'s signature and the spec's ``dynamic_axes``:
    a name one side has and the other lacks is an InputsMismatch naming both sides (once a
    TypeError per test of every combination). Torch's runners call it only when a call raised
    TypeError: a check on every call cost mlp 2 % of its instructions per inference."""
    import inspect

    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # a forward inspect cannot read: the call will tell
        return
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    takes = [n for n, p in params.items() if p.kind in named]
    any_name = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    given = list(names)
    problems = []
    unknown = [] if any_name else [n for n in given if n not in takes]
    needed = [n for n, p in params.items()
              if p.kind in named and p.default is p.empty and n not in given]
    if unknown or needed:
        signature = f"forward({', '.join(takes + (['**kwargs'] if any_name else []))})"
        if unknown:
            problems.append(f"make_inputs gives {_names(unknown)}, which {signature} does "
                            f"not take")
        if needed:
            problems.append(f"{signature} needs {_names(needed)}, which make_inputs does not "
                            f"give")
    stray = [n for n in dynamic_axes if n not in given]
    if stray:
        problems.append(f"dynamic_axes names {_names(stray)}, which make_inputs does not "
                        f"give (it gives {_names(given)})")
    if problems:
        raise InputsMismatch(f"{label}: {'; '.join(problems)}")


def _names(names) -> str:
    return ", ".join(repr(n) for n in names)


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
