"""A seeded slice of the OpInfo sweep (tests/opinfo_sweep.py): the engine and its fallback
agree with nested autograd on torch's own sample inputs, and each op is still served as the
committed table (tests/OPINFO_SWEEP.md) says. The full sweep: ``python tests/opinfo_sweep.py``."""

import math
import random
import re
from pathlib import Path

import pytest

pytest.importorskip("expecttest")  # torch's op_db imports it
import opinfo_sweep as sweep  # noqa: E402
TABLE = Path(__file__).with_name("OPINFO_SWEEP.md")
SLICE = 48


def _committed() -> dict[str, str]:
    rows = re.findall(r"^\| `([^`]+)` \| (\w+) \|", TABLE.read_text(), flags=re.M)
    return dict(rows)


def _slice() -> list:
    ops = [op for op in sweep.differentiable_ops() if sweep.op_name(op) in _committed()]
    return random.Random(31).sample(ops, SLICE)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap's batching fallback (the sweep's setting)
@pytest.mark.parametrize("op", _slice(), ids=sweep.op_name)
def test_an_op_agrees_with_nested_autograd_and_is_served_as_recorded(op):
    row = sweep.sweep_op(op, samples=1)
    assert math.isnan(row.error) or row.error <= sweep.TOLERANCE, row
    # one sample is served at least as well as the table's worst of three
    order = ["skipped", "engine", "fallback", "loop", "refused"]
    recorded = _committed()[row.op]
    assert order.index(row.served) <= order.index(recorded) or recorded == "skipped", row
    if recorded in ("engine", "skipped"):
        assert row.served == recorded, row


def test_the_committed_table_has_no_disagreement():
    text = TABLE.read_text()
    assert "**disagreements (relative error > 1e-07): 0**" in text
    assert len(_committed()) == len(sweep.differentiable_ops())
