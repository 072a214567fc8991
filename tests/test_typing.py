"""The package type-checks (mypy, configured in pyproject.toml)."""

import pytest

mypy_api = pytest.importorskip("mypy.api")


def test_mypy_passes_on_the_package():
    out, err, status = mypy_api.run([])
    assert status == 0, out + err
