"""A PINN for the 1D heat equation, with the time derivative and the spatial Laplacian
from one pass (``fg.derivatives`` with ``dims=``).

``u_t = k u_xx`` on ``x in [0, 1], t in [0, 1]``, ``u(0, x) = sin(pi x)``,
``u(t, 0) = u(t, 1) = 0``; the solution is ``u = exp(-k pi^2 t) sin(pi x)``.

Run: ``python examples/pinn_heat.py [--steps N]``; prints the relative L2 error.
"""

from __future__ import annotations

import math
import time

import torch

import functional_grads as fg

import _cli  # examples/_cli.py: the shared --threads option

K = 0.1


def main(argv: list[str] | None = None) -> dict:
    parser = _cli.parser(__doc__, "python examples/pinn_heat.py")
    parser.add_argument("--steps", type=int, default=2000)
    args = _cli.parse(parser, argv)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(),
                                torch.nn.Linear(32, 1)).double()
    f, params = fg.functionalize(model)       # f(params, [t, x])
    d = fg.derivatives(f, dims=[1])           # (u, grad u = [u_t, u_x], u_xx), one pass

    def residual(p, X):
        _, du, u_xx = d(p, X)
        return du[:, 0] - K * u_xx

    interior, values = fg.losses.pde_residual(residual), fg.losses.dirichlet(f)
    loss = lambda p, Xi, Xb, ub: interior(p, Xi) + 10 * values(p, Xb, ub)  # noqa: E731
    opt = fg.optim.adam(lambda step: 1e-2 * 0.5 * (1 + torch.cos(math.pi * step / args.steps)))
    step, state = fg.make_step(loss, opt), opt.init(params)

    g = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for i in range(args.steps):
        Xi = torch.rand(256, 2, generator=g, dtype=torch.float64)
        x0 = torch.rand(64, generator=g, dtype=torch.float64)
        tb = torch.rand(64, generator=g, dtype=torch.float64)
        Xb = torch.cat([torch.stack([torch.zeros_like(x0), x0], 1),                      # t = 0
                        torch.stack([tb, (torch.arange(64) % 2).double()], 1)])          # x = 0, 1
        ub = torch.cat([torch.sin(math.pi * x0), torch.zeros(64, dtype=torch.float64)])
        params, state, value = step(params, state, Xi, Xb, ub)
        if i % (args.steps // 5) == 0:
            print(f"step {i:5d}  loss {value.item():.3e}")
    seconds = time.perf_counter() - start

    axis = torch.linspace(0, 1, 50, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # (t, x)
    exact = torch.exp(-K * math.pi**2 * grid[:, 0]) * torch.sin(math.pi * grid[:, 1])
    error = ((f(params, grid).squeeze(-1) - exact).norm() / exact.norm()).item()
    print(f"\n{args.steps} steps in {seconds:.1f} s; relative L2 error on a 50x50 (t, x) grid: {error:.2e}")
    return {"relative_l2": error, "seconds": seconds}


if __name__ == "__main__":
    main()
