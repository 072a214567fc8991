"""A 100-dimensional Poisson problem where the stochastic Laplacian trains and the exact
Hessian would be slow.

``lap u = -(1/D) sum_i sin(x_i)`` on ``[0, 1]^D`` with ``u = (1/D) sum_i sin(x_i)`` on
the boundary; that ``u`` is the solution. The residual uses ``method="stde"``: 8 of the
100 second derivatives per point, drawn at random and scaled, which is unbiased; the
squared residual multiplies two independent estimates, so the loss is unbiased too.

Run: ``python examples/pinn_high_dim.py [--steps N]``; prints the per-step times of the
stochastic, exact-forward and Hessian-trace steps and the relative L2 error.
"""

from __future__ import annotations

import time

import torch

import functional_grads as fg

import _cli  # examples/_cli.py: the shared --threads option

D = 100


def solution(X: torch.Tensor) -> torch.Tensor:
    return torch.sin(X).mean(1)


def main(argv: list[str] | None = None) -> dict:
    parser = _cli.parser(__doc__, "python examples/pinn_high_dim.py")
    parser.add_argument("--steps", type=int, default=600)
    args = _cli.parse(parser, argv)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(D, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 1))
    f, params = fg.functionalize(model)
    boundary = fg.losses.dirichlet(f)

    def make_loss(method: str, **kw):
        lap = fg.laplacian(f, method=method, **kw)

        def loss(p, Xi, Xb):
            source = -solution(Xi)
            r1 = lap(p, Xi) - source
            r2 = lap(p, Xi) - source if method == "stde" else r1   # independent draws: unbiased square
            return (r1 * r2).mean() + 10 * boundary(p, Xb, solution(Xb))

        return loss

    g = torch.Generator().manual_seed(1)

    def batch():
        Xi = torch.rand(128, D, generator=g)
        Xb = torch.rand(128, D, generator=g)
        Xb[torch.arange(128), torch.randint(0, D, (128,), generator=g)] = torch.randint(0, 2, (128,), generator=g).float()
        return Xi, Xb

    opt = fg.optim.adam(3e-3)
    times = {}
    for name, kw in (("hessian", {}), ("forward", {}), ("stde", {"num_samples": 8})):
        step = fg.make_step(make_loss(name, **kw), opt)
        p, s = params, opt.init(params)
        Xi, Xb = batch()
        step(p, s, Xi, Xb)
        t = time.perf_counter()
        for _ in range(3):
            step(p, s, Xi, Xb)
        times[name] = (time.perf_counter() - t) / 3
    print("per-step time: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in times.items()))

    step, state = fg.make_step(make_loss("stde", num_samples=8), opt), opt.init(params)
    start = time.perf_counter()
    for i in range(args.steps):
        params, state, value = step(params, state, *batch())
        if i % (args.steps // 5) == 0:
            print(f"step {i:5d}  loss {value.item():.3e}")
    seconds = time.perf_counter() - start
    X = torch.rand(2000, D, generator=g)
    error = ((f(params, X).squeeze(-1) - solution(X)).norm() / solution(X).norm()).item()
    print(f"\nstde: {args.steps} steps in {seconds:.1f} s; relative L2 error at 2000 random points: {error:.2e}")
    return {"relative_l2": error, "step_ms": {k: v * 1e3 for k, v in times.items()}}


if __name__ == "__main__":
    main()
