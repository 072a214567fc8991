"""Models, hypothesis strategies and finite-difference references shared by the tests."""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import nn

import functional_grads as fg


class Sin(nn.Module):
    def forward(self, x):
        return torch.sin(x)


SMOOTH = {"tanh": nn.Tanh, "softplus": nn.Softplus, "sin": Sin, "gelu": nn.GELU}


def mlp(d_in: int, width: int, depth: int, d_out: int = 1, act: str = "tanh",
        dtype=torch.float64, seed: int = 0) -> nn.Module:
    """An MLP ``d_in -> width (x depth) -> d_out`` with the given activation."""
    torch.manual_seed(seed)
    layers, d = [], d_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), SMOOTH[act]() if act in SMOOTH else nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers).to(dtype)


@st.composite
def smooth_problems(draw, d_out: int | None = 1, square: bool = False):
    """``(f, params, X)``: a float64 smooth MLP and a batch, of random sizes (B may be 1)."""
    d_in = draw(st.integers(1, 4))
    out = d_in if square else (d_out if d_out is not None else draw(st.integers(1, 4)))
    model = mlp(d_in, draw(st.integers(1, 8)), draw(st.integers(1, 3)), out,
                draw(st.sampled_from(sorted(SMOOTH))), seed=draw(st.integers(0, 2**16)))
    f, params = fg.functionalize(model)
    B = draw(st.integers(1, 5))
    X = torch.randn(B, d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    return f, params, X


def fd_along(fn, params, X, V, eps: float = 1e-6):
    """Central difference of a batched ``fn(params, X)`` along per-sample directions ``V``."""
    return (fn(params, X + eps * V) - fn(params, X - eps * V)) / (2 * eps)


def assert_close(a, b, rtol=1e-6, atol=1e-7):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# A small smooth potential on ragged batches of structures (tests of functional_grads.atoms).
ATOMS_CUTOFF = 2.5
_MU = torch.linspace(0.5, ATOMS_CUTOFF, 6, dtype=torch.float64)


def atoms_energy(p, r, cell, batch, numbers, i, j, shifts):
    """Radial descriptors with a smooth cutoff into a tanh layer; energies ``[S]``."""
    d = fg.atoms.edge_vectors(r, cell, batch, i, j, shifts).norm(dim=1)
    fc = 0.5 * (torch.cos(torch.pi * d / ATOMS_CUTOFF) + 1)
    basis = torch.exp(-p["gamma"] * (d[:, None] - _MU.to(r.dtype)) ** 2) * fc[:, None]  # [E, K]
    desc = torch.zeros(r.shape[0], len(_MU), dtype=r.dtype).index_add(0, i, basis)  # [N, K] (shape[0], not len(r): NOTE [traced steps])
    atomic = torch.tanh(desc @ p["w1"] + p["b1"] + p["embed"][numbers]) @ p["w2"]  # [N]
    return torch.zeros(cell.shape[0], dtype=r.dtype).index_add(0, batch, atomic)


def atoms_params(width: int = 8, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    n = lambda *s: torch.randn(*s, generator=g, dtype=dtype) * 0.5  # noqa: E731
    return {"gamma": torch.tensor(1.5, dtype=dtype), "w1": n(len(_MU), width), "b1": n(width),
            "embed": n(3, width), "w2": n(width)}


def atoms_structures(sizes, periodic, seed: int = 0, dtype=torch.float64):
    """Random structures of the given sizes: periodic ones in a skewed cell of side ~2.6,
    the others clusters; atoms of species 0-2."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, pbc in zip(sizes, periodic):
        item = {"numbers": torch.randint(0, 3, (n,), generator=g)}
        if pbc:
            cell = 2.6 * torch.eye(3, dtype=dtype) + 0.2 * torch.rand(3, 3, generator=g, dtype=dtype)
            item |= {"positions": torch.rand(n, 3, generator=g, dtype=dtype) @ cell, "cell": cell}
        else:
            item["positions"] = 1.2 * torch.randn(n, 3, generator=g, dtype=dtype)
        out.append(item)
    return out


def atoms_inputs(sizes, periodic, seed: int = 0, dtype=torch.float64):
    """``(positions, cell, batch, numbers, i, j, shifts)`` of a collated batch."""
    return atoms_batch(atoms_structures(sizes, periodic, seed, dtype), dtype)


def atoms_batch(structures, dtype=torch.float64):
    """``(positions, cell, batch, numbers, i, j, shifts)`` of these structures."""
    b = fg.atoms.collate(structures, dtype=dtype)
    i, j, shifts = fg.atoms.neighbour_list(b.positions, b.cell, b.pbc, b.batch, ATOMS_CUTOFF)
    return b.positions, b.cell, b.batch, b.numbers, i, j, shifts


def compiled_graphs() -> int:
    """Graphs compiled so far in this process: traced (``compile=True``) and by torch.compile."""
    from functional_grads import _jit

    return _jit.graph_count() + torch._dynamo.utils.counters["stats"]["unique_graphs"]
