"""all-MiniLM-L6-v2 at short sequences: the smoke-tier cut of ``minilm`` (same model code)."""

from infergate.models.minilm import make_spec
from infergate.spec import Dim

SPEC = make_spec("minilm_short", tier="smoke", batch=Dim(1, 32, 2), seq=Dim(4, 32, 16),
                 description="all-MiniLM-L6-v2 (real weights) at seq <= 32, smoke tier")
