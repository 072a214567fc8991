"""Force matching: learn a potential energy E(r) of a Morse cluster from forces alone.

A 5-atom cluster with the Morse pair potential ``D (1 - exp(-a (r - r0)))^2`` is sampled
around its compact geometry; the forces ``F = -grad_r E`` are the only training signal.
The model is an MLP on the pairwise distances (so E is invariant to rotations and
translations), trained with the Sobolev loss with ``value_weight=0``: the fitted E is
therefore known up to a constant, which we remove before comparing energies.

Run: ``python examples/force_matching.py [--steps N]``
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

import functional_grads as fg

import _cli  # examples/_cli.py: the shared --threads option

N_ATOMS = 5
PAIRS = torch.tensor(list(itertools.combinations(range(N_ATOMS), 2)))


def distances(r: torch.Tensor) -> torch.Tensor:
    """Positions ``[..., N_ATOMS * 3] -> pairwise distances [..., n_pairs]``."""
    r = r.reshape(*r.shape[:-1], N_ATOMS, 3)
    return (r[..., PAIRS[:, 0], :] - r[..., PAIRS[:, 1], :]).norm(dim=-1)


def morse_energy(r: torch.Tensor, D: float = 1.0, a: float = 1.5, r0: float = 1.0) -> torch.Tensor:
    return (D * (1 - torch.exp(-a * (distances(r) - r0))) ** 2).sum(-1)


class Potential(nn.Module):
    """E(r) = MLP(exp(-d_ij)) for one configuration ``[N_ATOMS * 3]`` or a batch."""

    def __init__(self, width: int = 64):
        super().__init__()
        n = len(PAIRS)
        self.net = nn.Sequential(nn.Linear(n, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, r):
        return self.net(torch.exp(-distances(r)))


def sample(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Configurations around a trigonal bipyramid, their energies and forces."""
    base = torch.tensor([[0, 0, 0.5], [0, 0, -0.5], [0.87, 0, 0], [-0.43, 0.75, 0], [-0.43, -0.75, 0]]) * 1.2
    r = (base + 0.12 * torch.randn(n, N_ATOMS, 3, generator=generator)).reshape(n, -1)
    energy = morse_energy(r)
    forces = -torch.func.vmap(torch.func.grad(morse_energy))(r)
    return r, energy, forces


def main(argv: list[str] | None = None) -> dict:
    parser = _cli.parser(__doc__, "python examples/force_matching.py")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--train", type=int, default=1000)
    args = _cli.parse(parser, argv)
    g = torch.Generator().manual_seed(0)
    r, E, F = sample(args.train, g)
    r_test, E_test, F_test = sample(500, g)
    torch.manual_seed(0)
    f, params = fg.functionalize(Potential())
    loss = fg.losses.sobolev(f, value_weight=0.0)  # forces only: dY = grad_r E = -F
    opt = fg.optim.adam(3e-3)
    step = fg.make_step(loss, opt, compile=False)
    state = opt.init(params)
    for i in range(args.steps):
        params, state, value = step(params, state, r, E, -F)
        if i % max(args.steps // 5, 1) == 0:
            print(f"step {i:5d}  force MSE {value.item():.5f}")

    pred_F = -fg.input_grad(f)(params, r_test)
    pred_E = f(params, r_test).squeeze(-1)
    offset = (pred_E - E_test).mean()  # the constant that forces cannot determine
    force_rmse = (pred_F - F_test).pow(2).mean().sqrt().item()
    energy_rmse = (pred_E - offset - E_test).pow(2).mean().sqrt().item()
    out = {"force_rmse": force_rmse, "force_std": F_test.std().item(),
           "energy_rmse": energy_rmse, "energy_std": E_test.std().item()}
    print(f"held-out ({len(r_test)} configurations): force RMSE {force_rmse:.4f} (force std {out['force_std']:.4f}), "
          f"energy RMSE {energy_rmse:.4f} after removing the constant (energy std {out['energy_std']:.4f})")
    return out


if __name__ == "__main__":
    main()
