"""Interatomic potential: train on energies, forces and stress of ragged batches of structures.

Copper structures of different sizes, periodic bulk cells (1-16 atoms, strained and
rattled) and non-periodic clusters (4-13 atoms), labelled by ASE's EMT calculator
(``pip install -e ".[atoms]"``; without ASE, a Morse pair potential in plain torch labels
them instead). The model is an ``nn.Module`` on ragged batches: radial descriptors of
each atom's neighbours (a smooth cutoff, periodic images from ``atoms.neighbour_list``)
into an MLP, atomic energies summed per structure. ``atoms.force_matching`` trains it on
energies, forces and stress; an energy-only fit of the same model is the baseline. Then
one step is timed three ways: ours eager, ours compiled (one graph for every batch
size), and the hand-written ``autograd.grad(create_graph=True)`` pattern.

Run: ``python examples/interatomic_potential.py [--steps N] [--no-compile]``
"""

from __future__ import annotations

import logging
import math
import statistics
import time

import torch
from torch import nn

import functional_grads as fg
from functional_grads import atoms

import _cli  # examples/_cli.py: the shared --threads option

CUTOFF = 4.0  # Angstrom: Cu's first two neighbour shells (2.55 and 3.61)


class Potential(nn.Module):
    """``(positions [N, 3], cell [S, 3, 3], batch [N], i, j, shifts) -> energies [S]``."""

    def __init__(self, n_basis: int = 12, width: int = 32):
        super().__init__()
        self.register_buffer("centres", torch.linspace(1.5, CUTOFF, n_basis))
        self.width = nn.Parameter(torch.tensor(2.0))
        self.mlp = nn.Sequential(nn.Linear(n_basis, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 1))

    def forward(self, positions, cell, batch, i, j, shifts):
        d = atoms.edge_vectors(positions, cell, batch, i, j, shifts).norm(dim=1)  # [E]
        smooth = 0.5 * (torch.cos(math.pi * d / CUTOFF) + 1)  # goes to 0 at the cutoff
        basis = torch.exp(-self.width * (d[:, None] - self.centres) ** 2) * smooth[:, None]  # [E, K]
        descriptors = torch.zeros(positions.shape[0], basis.shape[1], dtype=basis.dtype).index_add(0, i, basis)
        atomic = self.mlp(descriptors).squeeze(1)  # [N]
        return torch.zeros(cell.shape[0], dtype=atomic.dtype).index_add(0, batch, atomic)


def structures(n: int, seed: int) -> list:
    """``n`` labelled copper structures, half periodic, half clusters (ASE EMT or Morse)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        periodic = k % 2 == 0
        if periodic:
            repeat = [(1, 1, 1), (1, 1, 1), (2, 1, 1), (2, 2, 1)][k // 2 % 4]
            cell = torch.eye(3, dtype=torch.float64) * 3.61 * torch.tensor(repeat, dtype=torch.float64)
            base = torch.tensor([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]], dtype=torch.float64) * 3.61
            grid = torch.cartesian_prod(*[torch.arange(r, dtype=torch.float64) for r in repeat]) * 3.61
            positions = (grid[:, None] + base[None]).reshape(-1, 3)
            if k // 2 % 4 == 0:  # the 1-atom primitive cell
                cell, positions = torch.tensor([[0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=torch.float64) * 1.805, positions[:1]
            strain = 0.03 * (2 * torch.rand(3, 3, generator=g, dtype=torch.float64) - 1)
            strain = (strain + strain.T) / 2 + torch.eye(3, dtype=torch.float64)
            cell, positions = cell @ strain, positions @ strain
        else:
            cell = None
            shells = torch.tensor([[0, 0, 0], [0, 1, 1], [0, -1, -1], [1, 0, 1], [-1, 0, -1], [1, 1, 0], [-1, -1, 0],
                                   [0, 1, -1], [0, -1, 1], [1, 0, -1], [-1, 0, 1], [1, -1, 0], [-1, 1, 0]],
                                  dtype=torch.float64) * 1.805
            positions = shells[:int(torch.randint(4, 14, (), generator=g))]
        positions = positions + 0.08 * torch.randn(positions.shape, generator=g, dtype=torch.float64)
        out.append({"positions": positions, "numbers": [29] * len(positions), "cell": cell})
    return _label(out)


def _label(items: list) -> list:
    try:
        from ase import Atoms
        from ase.calculators.emt import EMT
    except ImportError:
        print("ASE is not installed: labelling with a Morse pair potential instead of EMT")
        return _morse_labels(items)
    for item in items:
        a = Atoms(numbers=item["numbers"], positions=item["positions"].numpy(),
                  cell=None if item["cell"] is None else item["cell"].numpy(), pbc=item["cell"] is not None)
        a.calc = EMT()
        item |= {"energy": a.get_potential_energy(), "forces": a.get_forces(),
                 "stress": a.get_stress(voigt=False) if item["cell"] is not None else torch.zeros(3, 3)}
    return items


def _morse_labels(items: list) -> list:
    def morse(_, positions, cell, batch, i, j, shifts):
        d = atoms.edge_vectors(positions, cell, batch, i, j, shifts).norm(dim=1)
        pair = 0.35 * ((1 - torch.exp(-1.4 * (d - 2.55))) ** 2 - 1) * 0.5 * (torch.cos(math.pi * d / CUTOFF) + 1)
        return torch.zeros(cell.shape[0], dtype=d.dtype).index_add(0, batch[i], pair / 2)

    b = atoms.collate(items, dtype=torch.float64)
    E, F, sigma = atoms.energy_forces_stress(morse, stress=True)(None, *inputs(b))
    rows = b.batch.tolist()
    for k, item in enumerate(items):
        item |= {"energy": E[k], "forces": F[[n for n, s in enumerate(rows) if s == k]], "stress": sigma[k]}
    return items


def inputs(b: atoms.Batch) -> tuple:
    """What the model takes: ``(positions, cell, batch, i, j, shifts)``."""
    return (b.positions, b.cell, b.batch, *atoms.neighbour_list(b.positions, b.cell, b.pbc, b.batch, CUTOFF))


def train(params, b: atoms.Batch, loss, steps: int, stress: bool) -> dict:
    opt = fg.optim.adam(3e-3)
    step = fg.make_step(loss, opt)
    state = opt.init(params)
    batch = (*inputs(b), b.energy, b.forces, *([b.stress] if stress else []))
    for _ in range(steps):
        params, state, _ = step(params, state, *batch)
    return params


def errors(f, params, b: atoms.Batch) -> dict:
    E, F, sigma = atoms.energy_forces_stress(f, stress=True)(params, *inputs(b))
    n_atoms = torch.bincount(b.batch).to(E.dtype)
    periodic = b.pbc.any(1)
    return {"energy_mae_mev_per_atom": 1e3 * ((E - b.energy) / n_atoms).abs().mean().item(),
            "force_rmse_mev_per_a": 1e3 * (F - b.forces).pow(2).mean().sqrt().item(),
            "stress_rmse_mev_per_a3": 1e3 * (sigma - b.stress)[periodic].pow(2).mean().sqrt().item()}


def handwritten_loss(model: nn.Module, positions, cell, batch, i, j, shifts, energy, forces, stress,
                     weights=(1.0, 10.0, 100.0)):
    """The plain-PyTorch pattern: a strain leaf, ``autograd.grad(create_graph=True)``."""
    positions = positions.detach().requires_grad_()
    eps = torch.zeros_like(cell, requires_grad=True)
    eye = torch.eye(3, dtype=cell.dtype)
    E = model(torch.einsum("ni,nij->nj", positions, eye + eps[batch]), cell @ (eye + eps), batch, i, j, shifts)
    dr, deps = torch.autograd.grad(E.sum(), (positions, eps), create_graph=True)
    volume = torch.linalg.det(cell).abs()
    periodic = volume > 0
    sigma = (deps + deps.transpose(1, 2)) / 2 / torch.where(periodic, volume, 1)[:, None, None]
    n_atoms = torch.zeros_like(energy).index_add(0, batch, torch.ones_like(positions[:, 0]))
    return (weights[0] * ((E - energy) / n_atoms).pow(2).mean() + weights[1] * (-dr - forces).pow(2).mean()
            + weights[2] * (sigma - stress)[periodic].pow(2).mean())


def handwritten_step(loss_fn, model: nn.Module, opt: torch.optim.Optimizer, *batch) -> torch.Tensor:
    """``loss_fn`` (:func:`handwritten_loss`, or a compiled version), backward, ``torch.optim`` step."""
    loss = loss_fn(model, *batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def time_steps(args, model: nn.Module, b: atoms.Batch, loss) -> dict:
    """Median step time of each pattern on the training batch, and compiled graphs per batch size."""
    batch = (*inputs(b), b.energy, b.forces, b.stress)
    f, params = fg.functionalize(model)
    opt = fg.optim.adam(1e-3)
    ours = {"ours eager": fg.make_step(loss, opt)}
    if args.compile:
        ours["ours compiled"] = fg.make_step(loss, opt, compile=True)
    out = {}
    for name, step in ours.items():
        state = opt.init(params)
        start = time.perf_counter()
        step(params, state, *batch)
        first = time.perf_counter() - start
        out[name] = _median(lambda: step(params, state, *batch), args.repeats)
        print(f"{name:>22}: {1e3 * out[name]:7.2f} ms/step (first call {first:.1f} s)")
    torch_opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    out["hand-written"] = _median(lambda: handwritten_step(handwritten_loss, model, torch_opt, *batch), args.repeats)
    print(f"{'hand-written create_graph':>22}: {1e3 * out['hand-written']:7.2f} ms/step")
    if args.compile:  # other batch sizes: the compiled step should not compile again
        compiles = _CompileLog()  # counts the library's "compiled" log lines
        state = opt.init(params)
        for n in (6, 10, 30):
            other = atoms.collate(structures(n, seed=100 + n), dtype=torch.float64)
            ours["ours compiled"](params, state, *inputs(other), other.energy, other.forces, other.stress)
        out["recompiles"] = compiles.close()
        print(f"compiled graphs added by 3 other batch sizes: {out['recompiles']}")
    return out


class _CompileLog(logging.Handler):
    """Counts the graphs a compiled step compiles, from its log lines on "functional_grads"."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0
        self.logger = logging.getLogger("functional_grads")
        self.level_before = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "compiled" in record.getMessage()

    def close(self) -> int:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_before)
        return self.count


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = _cli.parser(__doc__, "python examples/interatomic_potential.py")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--train", type=int, default=80, help="training structures")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per pattern")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compiled timing")
    args = _cli.parse(parser, argv)
    train_set = atoms.collate(structures(args.train, seed=0), dtype=torch.float64)
    test_set = atoms.collate(structures(40, seed=1), dtype=torch.float64)
    print(f"{args.train} training structures ({len(train_set.positions)} atoms), 40 held out "
          f"({len(test_set.positions)} atoms); cutoff {CUTOFF} A")
    results = {}
    for name, weights in [("energies only", (1.0, 0.0, 0.0)), ("energies, forces, stress", (1.0, 10.0, 100.0))]:
        torch.manual_seed(0)
        model = Potential().double()
        f, params = fg.functionalize(model)
        loss = atoms.force_matching(f, energy_weight=weights[0], force_weight=weights[1], stress_weight=weights[2])
        params = train(params, train_set, loss, args.steps, stress=weights[2] > 0)
        results[name] = errors(f, params, test_set)
        e = results[name]
        print(f"{name:>25}: held-out energy MAE {e['energy_mae_mev_per_atom']:7.2f} meV/atom, force RMSE "
              f"{e['force_rmse_mev_per_a']:7.1f} meV/A, stress RMSE {e['stress_rmse_mev_per_a3']:6.2f} meV/A^3")
    torch.manual_seed(0)
    model = Potential().double()
    loss = atoms.force_matching(fg.functionalize(model)[0], force_weight=10.0, stress_weight=100.0)
    results["timing"] = time_steps(args, model, train_set, loss)
    return results


if __name__ == "__main__":
    main()
