"""Score matching on a 2D mixture of Gaussians: learn ``s(x) ~ grad log p(x)`` from samples.

The data are 4 Gaussians (std 0.3) on the corners of a square. ``s`` is trained by
denoising score matching at noise ``sigma``, so it learns the score of the data blurred by
``N(0, sigma^2 I)``, which is again a mixture (std ``sqrt(0.3^2 + sigma^2)``) with a
closed-form score; we report the learned score's relative error against it. The sliced
score matching loss is shown on the same model.

Run: ``python examples/score_matching.py [--steps N]``.
"""

from __future__ import annotations

import math

import torch

import functional_grads as fg

import _cli  # examples/_cli.py: the shared --threads option

CENTRES = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
STD, SIGMA = 0.3, 0.2


def sample(n: int, g: torch.Generator) -> torch.Tensor:
    return CENTRES[torch.randint(0, 4, (n,), generator=g)] + STD * torch.randn(n, 2, generator=g)


def true_score(X: torch.Tensor, std: float) -> torch.Tensor:
    """grad log of an equal-weight mixture of N(c, std^2 I)."""
    d = CENTRES[None] - X[:, None]                       # [B, 4, 2]
    w = torch.softmax(-(d**2).sum(-1) / (2 * std**2), 1)  # responsibilities [B, 4]
    return (w[..., None] * d).sum(1) / std**2


def main(argv: list[str] | None = None) -> dict:
    parser = _cli.parser(__doc__, "python examples/score_matching.py")
    parser.add_argument("--steps", type=int, default=3000)
    args = _cli.parse(parser, argv)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64), torch.nn.SiLU(),
                              torch.nn.Linear(64, 2))
    s, params = fg.functionalize(net)
    loss = fg.losses.denoising_score_matching(s, SIGMA)
    opt = fg.optim.adam(lambda step: 3e-3 * 0.5 * (1 + torch.cos(math.pi * step / args.steps)))
    step, state = fg.make_step(loss, opt), opt.init(params)
    g = torch.Generator().manual_seed(1)
    for i in range(args.steps):
        params, state, value = step(params, state, sample(512, g))
        if i % (args.steps // 5) == 0:
            print(f"step {i:5d}  denoising score matching loss {value.item():.4f}")

    blurred = math.sqrt(STD**2 + SIGMA**2)
    X = sample(4000, g) + SIGMA * torch.randn(4000, 2, generator=g)   # points where the blurred density lives
    target = true_score(X, blurred)
    with torch.no_grad():
        error = ((s(params, X) - target).norm() / target.norm()).item()
    sliced = fg.losses.sliced_score_matching(s, num_samples=4)(params, X).item()
    exact = fg.losses.score_matching(s)(params, X).item()
    print(f"\nrelative error of the learned score vs the true blurred score: {error:.3f}")
    print(f"score-matching loss of the trained model: exact {exact:.3f}, sliced estimate {sliced:.3f}")
    return {"relative_error": error, "exact_sm": exact, "sliced_sm": sliced}


if __name__ == "__main__":
    main()
