"""Adversarial robustness on two moons: FGSM and PGD attacks, then adversarial training.

A small classifier is trained on generated two-moons data; we report clean accuracy and
accuracy under FGSM and PGD (L-inf, eps = 0.25, 10 steps) on held-out points, then train
the same architecture with ``losses.adversarial`` (PGD inside the loss, the perturbation
treated as data as in Madry et al. 2018) and report the same three numbers.

Run: ``python examples/adversarial_robustness.py [--steps N]``
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import functional_grads as fg

import _cli  # examples/_cli.py: the shared --threads option

EPS = 0.25


def two_moons(n: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.rand(n, generator=generator) * math.pi
    label = torch.randint(0, 2, (n,), generator=generator)
    x = torch.stack([torch.cos(t), torch.sin(t)], 1)
    x = torch.where(label[:, None] == 1, torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1), x)
    return x + noise * torch.randn(n, 2, generator=generator), label


def cross_entropy(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """One sample's loss: logits [2], label []."""
    return F.cross_entropy(logits, label)


def main(argv: list[str] | None = None) -> dict:
    parser = _cli.parser(__doc__, "python examples/adversarial_robustness.py")
    parser.add_argument("--steps", type=int, default=600)
    args = _cli.parse(parser, argv)
    g = torch.Generator().manual_seed(0)
    X, Y = two_moons(1000, 0.1, g)
    X_test, Y_test = two_moons(1000, 0.1, g)

    def accuracies(f, params):
        acc = lambda x: (f(params, x).argmax(1) == Y_test).float().mean().item()  # noqa: E731
        fgsm = fg.fgsm(f, params, X_test, Y_test, loss_fn=cross_entropy, eps=EPS)
        pgd = fg.pgd(f, params, X_test, Y_test, loss_fn=cross_entropy, eps=EPS, steps=10)
        return {"clean": acc(X_test), "fgsm": acc(fgsm), "pgd": acc(pgd)}

    results = {}
    plain = lambda f: (lambda p, X, Y: F.cross_entropy(f(p, X), Y))  # noqa: E731
    robust = lambda f: fg.losses.adversarial(f, cross_entropy, fg.Attack(eps=EPS, steps=5))  # noqa: E731
    for name, make_loss in (("standard training", plain), ("adversarial training", robust)):
        torch.manual_seed(0)
        f, params = fg.functionalize(nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2)))
        opt = fg.optim.adam(1e-2)
        step = fg.make_step(make_loss(f), opt, compile=False)
        state = opt.init(params)
        for _ in range(args.steps):
            params, state, _ = step(params, state, X, Y)
        results[name] = acc = accuracies(f, params)
        print(f"{name:21s}: clean {acc['clean']:.3f}, FGSM (eps={EPS}) {acc['fgsm']:.3f}, "
              f"PGD-10 (eps={EPS}) {acc['pgd']:.3f}")
    return results


if __name__ == "__main__":
    main()
