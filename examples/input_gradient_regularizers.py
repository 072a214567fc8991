"""Seed 001 done right: losses that depend on the input gradient, and that train the weights.

The seed builds each penalty from ``input_tensor.grad`` after ``backward(retain_graph=True)``:
a *detached* tensor, so the penalty adds nothing to the weights' gradients. Here each
penalty is a functional loss whose outer gradient is exact. For each of the seed's three
examples this prints (a) how much the penalty changes the weights' gradient, ours vs the
seed's, and (b) what training with it achieves.

Run: ``python examples/input_gradient_regularizers.py [--steps N]``
"""

from __future__ import annotations


import torch
from torch import nn

import functional_grads as fg

import _cli  # examples/_cli.py: the shared --threads option

mse = lambda out, y: ((out - y) ** 2).mean()  # noqa: E731  one sample's loss


def seed_detached_penalty_grad(model, X, Y, penalty_of_input_grad):
    """The seed's pattern: the penalty is built from a detached input gradient."""
    x = X.clone().requires_grad_()
    out = model(x)
    out.sum().backward(retain_graph=True)
    input_grad = x.grad.clone()  # detached: no graph back to the weights
    model.zero_grad()
    loss = ((out - Y) ** 2).mean() + penalty_of_input_grad(input_grad)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    return grads


def gradient_change(with_penalty, without):
    return sum((with_penalty[k] - without[k]).norm() ** 2 for k in without).sqrt().item()


def main(argv: list[str] | None = None) -> dict:
    parser = _cli.parser(__doc__, "python examples/input_gradient_regularizers.py")
    parser.add_argument("--steps", type=int, default=400)
    args = _cli.parse(parser, argv)
    torch.manual_seed(0)
    X = torch.randn(256, 10)
    Y = torch.tanh(X @ torch.randn(10, 1)) + 0.1 * torch.randn(256, 1)
    directions = torch.randn(1, 10).expand(256, 10)
    results = {}

    def model_and_f():
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 1))
        return model, *fg.functionalize(model)

    fit = lambda f: (lambda p, X, Y: ((f(p, X) - Y) ** 2).mean())  # noqa: E731
    # name: (penalty(f) -> loss(p, X, Y), the seed's penalty on a detached input gradient,
    #        weight, what the penalty is for: (label, measure(f, p)))
    examples = {
        "1 gradient-norm penalty": (
            lambda f: (lambda p, X, Y: fg.losses.gradient_penalty(f)(p, X)),  # double backprop
            lambda g: (g**2).sum(1).mean(),
            0.1,
            ("mean ||grad_x f||^2", lambda f, p: fg.losses.gradient_penalty(f)(p, X)),
        ),
        "2 gradient-direction matching": (
            lambda f: (lambda p, X, Y: fg.losses.gradient_alignment(f)(p, X, directions)),
            lambda g: (1 - torch.nn.functional.cosine_similarity(g, directions, dim=1)).mean(),
            0.5,
            ("mean cos(grad_x f, direction)", lambda f, p: 1 - fg.losses.gradient_alignment(f)(p, X, directions)),
        ),
        "3 FGSM adversarial term": (
            lambda f: fg.losses.adversarial(f, mse, fg.Attack(eps=0.3)),
            None,  # the seed's third example is not detached; it perturbs along the *output* gradient
            1.0,
            ("loss under FGSM eps=0.3", lambda f, p: fg.losses.adversarial(f, mse, fg.Attack(eps=0.3))(p, X, Y)),
        ),
    }
    for name, (make_penalty, seed_penalty, weight, (label, measure)) in examples.items():
        model, f, params = model_and_f()
        penalty = make_penalty(f)
        total = lambda p, X, Y: fit(f)(p, X, Y) + weight * penalty(p, X, Y)  # noqa: E731
        _, g_total = fg.value_and_grad(total)(params, X, Y)
        _, g_fit = fg.value_and_grad(fit(f))(params, X, Y)
        results[f"{name} our change"] = ours = gradient_change(g_total, g_fit)
        line = f"[{name}] change of the weights' gradient from the penalty: ours {ours:.4f}"
        if seed_penalty is not None:
            seed = gradient_change(seed_detached_penalty_grad(model, X, Y, lambda g: weight * seed_penalty(g)), g_fit)
            results[f"{name} seed change"] = seed
            line += f", seed's detached version {seed:.4f}"
        print(line)
        for kind, loss in (("plain fit", fit(f)), ("with penalty", total)):
            opt = fg.optim.adam(1e-2)
            step = fg.make_step(loss, opt, compile=False)
            p, state = params, opt.init(params)
            for _ in range(args.steps):
                p, state, _ = step(p, state, X, Y)
            results[f"{name} {kind}"] = value = measure(f, p).item()
            print(f"    trained {kind:13s}: fit MSE {fit(f)(p, X, Y).item():.4f}, {label} {value:.4f}")
    return results


if __name__ == "__main__":
    main()
