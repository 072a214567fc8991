"""Hypothesis profiles: a deterministic ``ci`` one (default) and a longer ``dev`` one.

Choose with ``FG_HYPOTHESIS_PROFILE=dev python -m pytest``.
"""

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=12, derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", max_examples=200, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("FG_HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(min(2, torch.get_num_threads()))
