"""The README's demo (seed 002) recovers 2P."""

from functional_grads import demo


def test_demo_recovers_2p_eagerly():
    assert demo.main(["--steps", "600"]) < 0.05


def test_demo_runs_compiled():
    assert demo.main(["--steps", "300", "--compile"]) < 0.2
