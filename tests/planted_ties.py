"""Classifiers for the tie-aware top-1 check, at module level so worker processes find them.

``NEAR_TIE``: a clean 10-class classifier at batch 4 whose reference has one near-tie row (its
top-2 logits ``GAP`` apart): int8 may flip that row, which is quantization noise, not a
regression. ``CONFIDENT_FLIP``: the same model, but the exported graph swaps the top-2 logits
of row 1, a confident row (gap 0.11 of a ~1.5 logit span): a real regression at any batch size.
"""

from dataclasses import replace
from functools import cache

import torch
from torch import nn

from infergate.spec import Dim, ModelSpec, input_generator

FEATURES, CLASSES, TIE_ROW, FLIP_ROW = 16, 10, 2, 1
GAP = 1e-4  # reference top-1/top-2 gap of the near-tie row, in logits (rows span ~5)


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, CLASSES))

    def forward(self, x):
        return (self.body(x),)


class FlipsARowWhenExported(Classifier):
    def forward(self, x):
        (logits,) = super().forward(x)
        if torch.compiler.is_exporting():
            row = logits[FLIP_ROW]
            top2 = row.topk(2).indices
            flipped = row.scatter(0, top2, row.gather(0, top2.flip(0)))
            logits = torch.cat([logits[:FLIP_ROW], flipped[None], logits[FLIP_ROW + 1:]])
        return (logits,)


def _seeded(cls):
    torch.manual_seed(0)
    return cls().eval()


@cache
def _clean() -> Classifier:
    return _seeded(Classifier)


def _near_tie_row(a: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """A point between ``a`` and the first of ``others`` of another class where the two
    classes' logits are GAP apart, ``a``'s class ahead: bisection along the segment."""
    model = _clean()
    with torch.no_grad():
        classes = model(torch.cat([a[None], others]))[0].argmax(-1)
        b = others[int((classes[1:] != classes[0]).nonzero()[0])]
        ca, cb = int(classes[0]), int(model(b[None])[0].argmax())
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            logits = model(((1 - mid) * a + mid * b)[None])[0][0]
            if logits.argmax() == ca and logits[ca] - logits[cb] > GAP:
                lo = mid
            else:
                hi = mid
        return (1 - lo) * a + lo * b


def make_inputs(batch: int, seed: int) -> dict:
    x = torch.randn(batch + 8, FEATURES, generator=input_generator(seed)) * 2
    if batch > TIE_ROW:
        x[TIE_ROW] = _near_tie_row(x[TIE_ROW], x[batch:])
    return {"x": x[:batch]}


NEAR_TIE = ModelSpec(
    name="near_tie_classifier",
    description="16-64-10 classifier; row 2 of the example batch is a near-tie",
    build=lambda store: _seeded(Classifier),
    make_inputs=make_inputs,
    outputs=("logits",),
    logits=("logits",),
    dims={"batch": Dim(1, 8, 4)},
    dynamic_axes={"x": {0: "batch"}},
)

CONFIDENT_FLIP = replace(NEAR_TIE, name="confident_flip_classifier",
                         build=lambda store: _seeded(FlipsARowWhenExported))
