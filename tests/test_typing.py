"""The package type-checks (mypy, configured in pyproject.toml)."""

import pytest

mypy_api = pytest.importorskip("mypy.api")


def test_mypy_passes_on_the_package():
    out, err, status = mypy_api.run([])
    assert status == 0, out + err


def test_the_package_ships_its_type_information():
    from importlib.resources import files

    assert files("functional_grads").joinpath("py.typed").is_file()
