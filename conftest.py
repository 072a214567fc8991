"""Names available to the docstring examples (``pytest --doctest-modules``)."""

import pytest
import torch

import functional_grads


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace["torch"] = torch
    for name in functional_grads.__all__:
        doctest_namespace[name] = getattr(functional_grads, name)
