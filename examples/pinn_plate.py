"""A fourth-order PDE: the deflection of a simply supported plate, ``lap lap w = q``, with a
PINN whose biharmonic comes from collapsed fourth-order Taylor mode (``fg.biharmonic``).

On the unit square with ``q = 4 pi^4 sin(pi x) sin(pi y)`` and the simply supported (Navier)
conditions ``w = 0`` and ``lap w = 0`` on the edges, the solution is
``w = sin(pi x) sin(pi y)``. The edge conditions use ``w_xx`` and ``w_yy`` from one call of
``fg.partials``.

Run: ``python examples/pinn_plate.py [--steps N]``; prints the relative L2 error of w.
"""

from __future__ import annotations

import math
import time

import torch

import functional_grads as fg

import _cli  # examples/_cli.py: the shared --threads option
from _models import ResidualMLP

SCALE = 4 * math.pi**4  # the residual is divided by it: lap lap w is ~400 times w


def exact(X: torch.Tensor) -> torch.Tensor:
    return torch.sin(math.pi * X[:, 0]) * torch.sin(math.pi * X[:, 1])


def main(argv: list[str] | None = None) -> dict:
    parser = _cli.parser(__doc__, "python examples/pinn_plate.py")
    parser.add_argument("--steps", type=int, default=3000)
    args = _cli.parse(parser, argv)
    torch.manual_seed(0)
    f, params = fg.functionalize(ResidualMLP(2, 32, 2, 1).double())   # f(params, [x, y]) -> w
    bilap = fg.biharmonic(f)                                         # [B]
    edge = fg.partials(f, {"w": (), "w_xx": (0, 0), "w_yy": (1, 1)})  # one pass, by name

    def loss(p, Xi, Xb):
        interior = (bilap(p, Xi) / SCALE - exact(Xi)).pow(2).mean()
        d = edge(p, Xb)
        return interior + 10 * (d["w"].pow(2).mean() + ((d["w_xx"] + d["w_yy"]) / math.pi**2).pow(2).mean())

    opt = fg.optim.adam(lambda step: 1e-2 * 0.5 * (1 + torch.cos(math.pi * step / args.steps)))
    step, state = fg.make_step(loss, opt, compile=True), opt.init(params)

    g = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for i in range(args.steps):
        Xi = torch.rand(256, 2, generator=g, dtype=torch.float64)
        s = torch.rand(4, 32, generator=g, dtype=torch.float64)
        zero, one = torch.zeros(32, dtype=torch.float64), torch.ones(32, dtype=torch.float64)
        Xb = torch.cat([torch.stack(pair, 1) for pair in ((s[0], zero), (s[1], one), (zero, s[2]), (one, s[3]))])
        params, state, value = step(params, state, Xi, Xb)
        if i % max(args.steps // 5, 1) == 0:
            print(f"step {i:5d}  loss {value.item():.3e}")
    seconds = time.perf_counter() - start

    axis = torch.linspace(0, 1, 51, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    want = exact(grid)
    error = ((f(params, grid).squeeze(-1) - want).norm() / want.norm()).item()
    print(f"\n{args.steps} steps in {seconds:.1f} s; relative L2 error of w on a 51x51 grid: {error:.2e}")
    return {"relative_l2": error, "seconds": seconds}


if __name__ == "__main__":
    main()
