"""The networks, in a module of their own: the model files import it inside ``build``, so
listing the matrix never imports torch. Editing it rebuilds the models' exports (the modules
defining a built model's layers are part of its key)."""

from torch import nn


def classifier_head(width: int, classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, classes))


class TinyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(32, 64), nn.ReLU())
        self.head = classifier_head(64, 5)

    def forward(self, features):
        return self.head(self.body(features))


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(16, 48), nn.Tanh())
        self.classes = classifier_head(48, 3)
        self.score = nn.Linear(48, 1)

    def forward(self, features):
        hidden = self.encoder(features)
        return {"score": self.score(hidden), "logits": self.classes(hidden)}
