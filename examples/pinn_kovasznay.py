"""Steady Navier-Stokes (Kovasznay flow) with a PINN whose network maps ``(x, y)`` to
``(u, v, p)``: the momentum and continuity residuals from the vector-valued operators.

``(u . grad) u + grad p - lap u / Re = 0`` and ``div u = 0`` on ``[-0.5, 1] x [-0.5, 1.5]``
with the analytic solution (Kovasznay 1948) on the boundary:
``u = 1 - e^(l x) cos(2 pi y)``, ``v = l / (2 pi) e^(l x) sin(2 pi y)``,
``p = (1 - e^(2 l x)) / 2``, ``l = Re / 2 - sqrt(Re^2 / 4 + 4 pi^2)``. One call of
``fg.derivatives`` gives the values ``[B, 3]``, the Jacobian ``[B, 3, 2]`` and the
Laplacian of each component ``[B, 3]`` (collapsed Taylor mode through the residual network).

Run: ``python examples/pinn_kovasznay.py [--steps N]``; prints the relative L2 errors of u, v, p.
"""

from __future__ import annotations

import math
import time

import torch

import functional_grads as fg

import _cli  # examples/_cli.py: the shared --threads option
from _models import ResidualMLP

RE = 20.0
LAM = RE / 2 - math.sqrt(RE**2 / 4 + 4 * math.pi**2)
LOW, HIGH = torch.tensor([-0.5, -0.5]), torch.tensor([1.0, 1.5])


def exact(X: torch.Tensor) -> torch.Tensor:
    """``[B, 2] -> [B, 3]``: the Kovasznay solution ``(u, v, p)``."""
    x, y = X[:, 0], X[:, 1]
    e = torch.exp(LAM * x)
    return torch.stack([1 - e * torch.cos(2 * math.pi * y), LAM / (2 * math.pi) * e * torch.sin(2 * math.pi * y),
                        (1 - torch.exp(2 * LAM * x)) / 2], 1)


def boundary(n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` points on each edge of the rectangle: ``[4 n, 2]``."""
    s = torch.rand(4, n, generator=g, dtype=torch.float64)
    lo, hi = LOW.double(), HIGH.double()
    x = torch.cat([lo[0] + (hi[0] - lo[0]) * s[0], lo[0] + (hi[0] - lo[0]) * s[1], lo[0].expand(n), hi[0].expand(n)])
    y = torch.cat([lo[1].expand(n), hi[1].expand(n), lo[1] + (hi[1] - lo[1]) * s[2], lo[1] + (hi[1] - lo[1]) * s[3]])
    return torch.stack([x, y], 1)


def main(argv: list[str] | None = None) -> dict:
    parser = _cli.parser(__doc__, "python examples/pinn_kovasznay.py")
    parser.add_argument("--steps", type=int, default=5000)
    args = _cli.parse(parser, argv)
    torch.manual_seed(0)
    f, params = fg.functionalize(ResidualMLP(2, 48, 3, 3).double())   # f(params, [x, y]) -> [u, v, p]
    d = fg.derivatives(f)                                            # values, Jacobian, Laplacians

    def losses(p, Xi, Xb, wb):
        w, J, lap = d(p, Xi)                       # [B, 3], [B, 3, 2], [B, 3]
        u, v = w[:, 0], w[:, 1]
        momentum = u[:, None] * J[:, :2, 0] + v[:, None] * J[:, :2, 1] + J[:, 2, :] - lap[:, :2] / RE
        continuity = J[:, 0, 0] + J[:, 1, 1]
        return (momentum.pow(2).sum(1).mean() + continuity.pow(2).mean()
                + 10 * (f(p, Xb) - wb).pow(2).sum(1).mean())

    opt = fg.optim.adam(lambda step: 3e-3 * 0.5 * (1 + torch.cos(math.pi * step / args.steps)))
    step, state = fg.make_step(losses, opt, compile=True), opt.init(params)

    g = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for i in range(args.steps):
        Xi = LOW.double() + (HIGH - LOW).double() * torch.rand(512, 2, generator=g, dtype=torch.float64)
        Xb = boundary(64, g)
        params, state, value = step(params, state, Xi, Xb, exact(Xb))
        if i % max(args.steps // 5, 1) == 0:
            print(f"step {i:5d}  loss {value.item():.3e}")
    seconds = time.perf_counter() - start

    grid = torch.cartesian_prod(torch.linspace(-0.5, 1.0, 61, dtype=torch.float64),
                                torch.linspace(-0.5, 1.5, 81, dtype=torch.float64))
    got, want = f(params, grid), exact(grid)  # p is fixed by its boundary values
    errors = {name: ((got[:, k] - want[:, k]).norm() / want[:, k].norm()).item() for k, name in enumerate("uvp")}
    print(f"\n{args.steps} steps in {seconds:.1f} s; relative L2 errors on a 61x81 grid: "
          + ", ".join(f"{k} {e:.2e}" for k, e in errors.items()))
    return {**{f"relative_l2_{k}": e for k, e in errors.items()}, "seconds": seconds}


if __name__ == "__main__":
    main()
