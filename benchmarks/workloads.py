"""The benchmark workloads, each as three torch contenders sharing one set of weights.

A workload is built by ``make(name, size, device)`` and holds a module, a batch, and:
``seed()``  the hand-written ``torch.autograd.grad(create_graph=True)`` pattern of the seeds,
``ours(compile)``  the same step through functional_grads (eager or compiled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

import functional_grads as fg


@dataclass
class Workload:
    name: str
    description: str
    model: nn.Module
    batch: tuple[torch.Tensor, ...]
    loss: Callable[..., torch.Tensor]          # functional loss(params, *batch)
    seed: Callable[[], Any]                    # the seed's autograd pattern, one step
    jacobian_only: bool = False                # workload 4: no outer gradient

    def ours(self, compile: bool | dict) -> Callable[[], Any]:
        f, params = fg.functionalize(self.model)
        if self.jacobian_only:
            jac = fg.input_jacobian(f, mode="rev")
            options = compile if isinstance(compile, dict) else {}
            fn = torch.compile(jac, fullgraph=True, **options) if compile else jac
            return lambda: fn(params, *self.batch)
        step = fg.value_and_grad(self.loss, compile=compile)
        return lambda: step(params, *self.batch)

    def loaded(self, folder: str) -> Callable[[], Any] | None:
        """The step saved with ``save_compiled`` and loaded back (None for ``jacobian``)."""
        if self.jacobian_only:
            return None
        f, params = fg.functionalize(self.model)
        try:
            path = fg.save_compiled(fg.value_and_grad(self.loss), f"{folder}/{self.name}.pt2", params, *self.batch)
        except RuntimeError as error:  # e.g. cnn_gp on torch 2.13: NOTE [traced steps]
            print(f"{self.name}: save_compiled failed ({' '.join(str(error).split())[:200]})")
            return None
        step = fg.load_compiled(path)
        return lambda: step(params, *self.batch)


def mlp(sizes: list[int], act: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """[*, 1, 32, 32] -> [*, 1]; works on one sample [1, 32, 32] as well as a batch."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16 * 8 * 8, 1)

    def forward(self, x):
        h = torch.tanh(self.c2(torch.tanh(self.c1(x))))
        return self.head(h.flatten(-3))


def _input_grad_autograd(model: nn.Module, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeds' pattern: requires_grad on X, grad with create_graph, ones as grad_outputs."""
    x = X.detach().requires_grad_()
    V = model(x)
    (g,) = torch.autograd.grad(V, x, torch.ones_like(V), create_graph=True)
    return V, g


def _seed_step(model: nn.Module, loss_of: Callable[[], torch.Tensor]) -> Callable[[], Any]:
    def step():
        model.zero_grad(set_to_none=True)
        loss = loss_of()
        loss.backward()
        return loss
    return step


def make(name: str, quick: bool, device: str, dtype=torch.float32) -> Workload:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(device)  # noqa: E731

    if name == "seed002":
        model = mlp([2, 10, 10, 1], nn.ReLU).to(device, dtype)
        axis = torch.linspace(-3, 3, 10, dtype=dtype)
        X = torch.cartesian_prod(axis, axis).to(device)
        S = X @ torch.tensor([[40.3784, -53.2436], [-53.2436, 76.075]], dtype=dtype, device=device)
        f, _ = fg.functionalize(model)

        def seed_loss():
            _, gx = _input_grad_autograd(model, X)
            return ((gx - S) ** 2).mean()

        return Workload(name, "seed 002 gradient matching, MLP 2-10-10-1 ReLU, N=100", model, (X, S),
                        fg.losses.gradient_matching(f), _seed_step(model, seed_loss))

    if name in ("sobolev", "value_fit"):
        D, width, depth, B = (32, 256, 4, 4096) if not quick else (8, 32, 2, 256)
        model = mlp([D] + [width] * depth + [1], nn.Tanh).to(device, dtype)
        X, Y, dY = rand(B, D), rand(B), rand(B, D)
        f, _ = fg.functionalize(model)
        if name == "value_fit":
            def loss(p, X, Y):
                return ((f(p, X).squeeze(-1) - Y) ** 2).mean()

            def seed_loss():
                return ((model(X).squeeze(-1) - Y) ** 2).mean()

            return Workload(name, f"plain value fit (unit of cost), tanh MLP D={D} width {width} depth {depth}, B={B}",
                            model, (X, Y), loss, _seed_step(model, seed_loss))
        vg = fg.value_and_input_grad(f)

        def loss(p, X, Y, dY):
            v, gx = vg(p, X)
            return ((v - Y) ** 2).mean() + ((gx - dY) ** 2).mean()

        def seed_loss():
            v, gx = _input_grad_autograd(model, X)
            return ((v.squeeze(-1) - Y) ** 2).mean() + ((gx - dY) ** 2).mean()

        return Workload(name, f"Sobolev (values + gradients), tanh MLP D={D} width {width} depth {depth}, B={B}",
                        model, (X, Y, dY), loss, _seed_step(model, seed_loss))

    if name == "cnn_gp":
        B = 256 if not quick else 16
        model = SmallCNN().to(device, dtype)
        X = rand(B, 1, 32, 32)
        f, _ = fg.functionalize(model)
        vg = fg.value_and_input_grad(f)

        def loss(p, X):
            v, gx = vg(p, X)
            return v.mean() + ((gx.flatten(1).norm(dim=1) - 1) ** 2).mean()

        def seed_loss():
            v, gx = _input_grad_autograd(model, X)
            return v.mean() + ((gx.flatten(1).norm(dim=1) - 1) ** 2).mean()

        return Workload(name, f"gradient penalty (WGAN-GP form), CNN 1x32x32, B={B}", model, (X,), loss,
                        _seed_step(model, seed_loss))

    if name == "jacobian":
        B = 1024 if not quick else 64
        model = mlp([16, 64, 64, 16], nn.Tanh).to(device, dtype)
        X = rand(B, 16)

        def seed():
            x = X.detach().requires_grad_()
            out = model(x)
            rows = [torch.autograd.grad(out[:, i].sum(), x, retain_graph=True)[0] for i in range(out.shape[1])]
            return torch.stack(rows, dim=1)

        return Workload(name, f"per-sample input Jacobian, MLP 16-64-64-16 tanh, B={B}", model, (X,), None, seed,
                        jacobian_only=True)

    if name == "overhead":
        # A near-empty gradient-of-gradient step (one 1x4 linear layer, 8 samples): what is
        # left is each contender's per-call overhead (guards, wrappers, dispatch).
        model = mlp([4, 1], nn.Tanh).to(device, dtype)
        X, S = rand(8, 4), rand(8, 4)
        f, _ = fg.functionalize(model)

        def seed_loss():
            _, gx = _input_grad_autograd(model, X)
            return ((gx - S) ** 2).mean()

        return Workload(name, "per-call overhead: gradient matching through one 4->1 linear layer, N=8", model,
                        (X, S), fg.losses.gradient_matching(f), _seed_step(model, seed_loss))

    raise ValueError(f"unknown workload {name!r}")


NAMES = ("seed002", "sobolev", "cnn_gp", "jacobian", "value_fit", "overhead")
