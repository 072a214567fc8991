"""A PINN for 2D Poisson on the unit square, with an analytic solution.

``-lap u = 2 pi^2 sin(pi x) sin(pi y)`` on ``[0, 1]^2``, ``u = 0`` on the boundary; the
solution is ``u = sin(pi x) sin(pi y)``. The residual uses the forward Laplacian (one
forward pass, no Hessian); the boundary term is a plain loss; they add with Python.

Run: ``python examples/pinn_poisson.py [--steps N]``; prints the relative L2 error.
"""

from __future__ import annotations

import math
import time

import torch

import functional_grads as fg

import _cli  # examples/_cli.py: the shared --threads option
from _models import ResidualMLP


def main(argv: list[str] | None = None) -> dict:
    parser = _cli.parser(__doc__, "python examples/pinn_poisson.py")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--compile", action="store_true")
    args = _cli.parse(parser, argv)
    torch.manual_seed(0)
    f, params = fg.functionalize(ResidualMLP(2, 32, 1, 1).double())         # a custom module: traced as it runs
    source = lambda X: 2 * math.pi**2 * torch.sin(math.pi * X[:, 0]) * torch.sin(math.pi * X[:, 1])  # noqa: E731
    lap = fg.laplacian(f)                                                   # [B]
    interior = fg.losses.pde_residual(lambda p, X: -lap(p, X) - source(X))
    boundary = fg.losses.dirichlet(f)
    loss = lambda p, Xi, Xb: interior(p, Xi) + 10 * boundary(p, Xb, Xb.new_zeros(Xb.shape[0]))  # noqa: E731
    schedule = lambda step: 1e-2 * 0.5 * (1 + torch.cos(math.pi * step / args.steps))  # noqa: E731
    opt = fg.optim.adam(schedule)
    step = fg.make_step(loss, opt, compile=args.compile)
    state = opt.init(params)

    g = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for i in range(args.steps):
        Xi = torch.rand(256, 2, generator=g, dtype=torch.float64)
        t = torch.rand(128, generator=g, dtype=torch.float64)
        side = torch.randint(0, 4, (128,), generator=g)
        Xb = torch.stack([torch.where(side < 2, side.double(), t), torch.where(side < 2, t, side.double() - 2)], 1)
        params, state, value = step(params, state, Xi, Xb)
        if i % (args.steps // 5) == 0:
            print(f"step {i:5d}  loss {value.item():.3e}")
    seconds = time.perf_counter() - start

    axis = torch.linspace(0, 1, 50, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    exact = torch.sin(math.pi * grid[:, 0]) * torch.sin(math.pi * grid[:, 1])
    error = ((f(params, grid).squeeze(-1) - exact).norm() / exact.norm()).item()
    print(f"\n{args.steps} steps in {seconds:.1f} s; relative L2 error on a 50x50 grid: {error:.2e}")
    return {"relative_l2": error, "seconds": seconds}


if __name__ == "__main__":
    main()
