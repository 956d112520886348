"""Small CNN trained at first use on scikit-learn's bundled 8x8 digits: a model with real
accuracy to lose, so quantization is judged on a task score, not only on tensor distance.
(torch is imported inside the functions: see ``mlp``.)"""

import hashlib
from functools import cache
from pathlib import Path

from infergate.models import ZOO
from infergate.spec import Dim, ModelSpec, TaskCheck, input_generator

_STEPS = 100  # full-batch Adam steps: ~98% held-out accuracy in ~2 s on 2 cores
_TEST_FRACTION = 0.25  # 450 held-out images


@cache
def _digits_cnn() -> type:
    """The network's class (defined on first use, with torch)."""
    from torch import nn

    class DigitsCnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            )
            self.head = nn.Linear(32 * 4 * 4, 10)

        def forward(self, pixels):
            return (self.head(self.features(pixels).flatten(1)),)

    return DigitsCnn


@cache
def _split():
    """(x_train, y_train, x_test, y_test) as tensors; the split is fixed by random_state."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()  # ships inside scikit-learn: no download
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=_TEST_FRACTION, random_state=0,
                                              stratify=y)
    return x_tr, y_tr, x_te, y_te


def _train(tmp: Path) -> None:
    import torch
    from torch import nn

    x, y, _, _ = _split()
    torch.manual_seed(0)
    model = _digits_cnn()()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    # Full batch, fixed step count, one thread: no shuffling order and no thread-count
    # dependent reduction order, so machines with different core counts get the same bits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(_STEPS):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x)[0], y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    torch.save(model.state_dict(), tmp / "state_dict.pt")


def build(store):
    import torch

    key = {"model": "digits_cnn", "torch": torch.__version__, "steps": _STEPS,
           "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]}
    folder = store.get("weights", key, _train, "training digits_cnn")
    torch.manual_seed(0)
    model = _digits_cnn()()
    model.load_state_dict(torch.load(folder / "state_dict.pt", weights_only=True))
    return model.eval()


def make_inputs(batch: int, seed: int) -> dict:
    import torch

    x_te = _split()[2]
    gen = input_generator(seed)
    return {"pixels": x_te[torch.randperm(len(x_te), generator=gen)[:batch]].clone()}


def _task_inputs() -> dict:
    return {"pixels": _split()[2].clone()}


def _accuracy(logits) -> float:
    import torch

    return float((torch.as_tensor(logits).argmax(1) == _split()[3]).float().mean())


def _score(outputs: dict, reference: dict) -> tuple[float, str]:
    acc, ref = _accuracy(outputs["logits"]), _accuracy(reference["logits"])
    return acc / ref, f"held-out accuracy {acc:.4f} vs fp32 {ref:.4f}"


def _calibration() -> list[dict]:
    # Real training images (never the held-out ones the task scores), 8 batches of 32.
    x_tr = _split()[0]
    return [{"pixels": x_tr[i * 32:(i + 1) * 32].clone()} for i in range(8)]


SPEC = ModelSpec(
    name="digits_cnn",
    requires={"sklearn": ZOO},
    description="2-conv CNN trained on sklearn digits (8x8), held-out accuracy task check",
    build=build,
    make_inputs=make_inputs,
    outputs=("logits",),
    logits=("logits",),
    # max covers the task batch (the whole 450-image held-out split).
    dims={"batch": Dim(1, 512, 8)},
    dynamic_axes={"pixels": {0: "batch"}},
    task=TaskCheck(
        description="top-1 accuracy on the 450 held-out sklearn digits, relative to fp32 torch",
        inputs=_task_inputs,
        score=_score,
        min_score=0.99,
    ),
    calibration=_calibration,
    tier="smoke",
)
