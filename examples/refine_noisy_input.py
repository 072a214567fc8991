"""Seed 000 done right: refine noisy inputs through a frozen network.

The seed optimises ``X`` with ``optim.Adam([{'params': X}])`` on a tensor that does not
require grad (it raises), through an untrained network, and would accumulate ``.grad`` in
the model. Here: train ``model ~ 2x + 1`` first, freeze it, then recover each clean input
from its noisy version and its target by minimising ``(model(x) - y)^2`` per sample.
The model's parameters are checked bit-identical afterwards, with no ``.grad``.

Run: ``python examples/refine_noisy_input.py``
"""

from __future__ import annotations


import torch
from torch import nn

import functional_grads as fg

import _cli  # examples/_cli.py: the shared --threads option


def main(argv: list[str] | None = None) -> dict:
    parser = _cli.parser(__doc__, "python examples/refine_noisy_input.py")
    parser.add_argument("--steps", type=int, default=100)
    args = _cli.parse(parser, argv)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1))
    f, params = fg.functionalize(model)

    # 1. Fit the model to y = 2x + 1 on [-2, 3] (a standard training loop, via torch.optim).
    x_train = torch.linspace(-2, 3, 256)[:, None]
    fit = lambda p, x, y: ((f(p, x) - y) ** 2).mean()  # noqa: E731
    step = fg.value_and_grad(fit)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(1500):
        _, grads = step(params, x_train, 2 * x_train + 1)
        fg.apply_grads(model, grads)  # .grad on the module; params alias its weights
        opt.step()
    model.zero_grad(set_to_none=True)

    # 2. Freeze it and refine noisy inputs so that the model maps them onto their targets.
    X = torch.randn(100, 1) + 0.5
    y = 2 * X + 1
    X_noisy = X + 0.3 * torch.randn(100, 1)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    objective = lambda x: ((f(params, x) - y) ** 2).sum(1)  # noqa: E731  [B] per sample
    result = fg.optimize_input(objective, X_noisy, steps=args.steps, optimizer="lbfgs", tol=1e-12)

    unchanged = all(torch.equal(frozen[k], v) for k, v in model.state_dict().items())
    no_grad = all(p.grad is None for p in model.parameters())
    out = {
        "loss_before": objective(X_noisy).mean().item(),
        "loss_after": result.history[-1].mean().item(),
        "input_error_before": (X_noisy - X).abs().mean().item(),
        "input_error_after": (result.x - X).abs().mean().item(),
        "model_unchanged": unchanged and no_grad,
    }
    print(f"loss (model(x) - y)^2 per sample: {out['loss_before']:.4f} -> {out['loss_after']:.2e} "
          f"({len(result.history)} L-BFGS steps, {int(result.converged.sum())}/100 converged)")
    print(f"mean |x - x_clean|: {out['input_error_before']:.4f} -> {out['input_error_after']:.4f}")
    print(f"model parameters bit-identical and no .grad: {out['model_unchanged']}")
    return out


if __name__ == "__main__":
    main()
