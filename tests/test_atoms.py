"""functional_grads.atoms: energies, forces and stress of ragged batches, and force matching."""

from __future__ import annotations

import re

import pytest
import torch
from helpers import ATOMS_CUTOFF, atoms_energy, atoms_inputs, atoms_params, atoms_structures, compiled_graphs
from hypothesis import given
from hypothesis import strategies as st

import functional_grads as fg
from functional_grads import atoms

EFS = atoms.energy_forces_stress(atoms_energy, stress=True)


def _id(match: str) -> str:
    """A test id from an error pattern, without the words the mutation run deselects by
    (``-k "not compile and not True"``, matched case-insensitively)."""
    return re.sub(r"(?i)true|compil", "_", re.sub(r"[^\w ]", "", match))[:30]


@st.composite
def ragged(draw):
    """``(sizes, periodic, seed)``: 1, 2 or 5 structures of 1-5 atoms, periodic or not."""
    S = draw(st.sampled_from([1, 2, 5]))
    sizes = draw(st.lists(st.integers(1, 5), min_size=S, max_size=S))
    periodic = draw(st.lists(st.booleans(), min_size=S, max_size=S))
    return sizes, periodic, draw(st.integers(0, 2**16))


def _strained(inputs, t, direction):
    """The inputs under the symmetric strain ``t * direction`` (positions and cell alike)."""
    r, cell, batch, *rest = inputs
    eye = torch.eye(3, dtype=r.dtype)
    return (torch.einsum("ni,nij->nj", r, eye + t * direction[batch]), cell @ (eye + t * direction), batch, *rest)


@given(ragged())
def test_forces_and_stress_equal_finite_differences(problem):
    sizes, periodic, seed = problem
    params, inputs = atoms_params(seed=seed), atoms_inputs(sizes, periodic, seed)
    E, F, sigma = EFS(params, *inputs)
    assert E.shape == (len(sizes),) and F.shape == (sum(sizes), 3) and sigma.shape == (len(sizes), 3, 3)
    torch.testing.assert_close(E, atoms_energy(params, *inputs), rtol=1e-12, atol=1e-12)
    g = torch.Generator().manual_seed(seed)
    h = 1e-6
    V = torch.randn(inputs[0].shape, generator=g, dtype=torch.float64)
    r, rest = inputs[0], inputs[1:]
    fd = (atoms_energy(params, r + h * V, *rest) - atoms_energy(params, r - h * V, *rest)).sum() / (2 * h)
    torch.testing.assert_close(-(F * V).sum(), fd, rtol=1e-7, atol=1e-8)
    volume = torch.linalg.det(inputs[1]).abs()
    for a, b in [(0, 0), (1, 2), (0, 1), (2, 2)]:  # a symmetric strain direction per structure
        M = torch.zeros(len(sizes), 3, 3, dtype=torch.float64)
        M[:, a, b] += 0.5
        M[:, b, a] += 0.5
        fd = (atoms_energy(params, *_strained(inputs, h, M)) - atoms_energy(params, *_strained(inputs, -h, M))) / (2 * h)
        want = torch.where(volume > 0, fd / torch.where(volume > 0, volume, 1), 0)
        torch.testing.assert_close(sigma[:, a, b], want, rtol=1e-7, atol=1e-8)
    assert (sigma[~torch.tensor(periodic)] == 0).all()  # no cell, no stress


@given(ragged())
def test_second_derivatives_of_forces_and_stress(problem):
    """The derivatives an outer gradient uses: forces and stress w.r.t. params and positions."""
    sizes, periodic, seed = problem
    params, (r, *rest) = atoms_params(seed=seed), atoms_inputs(sizes, periodic, seed)
    fg.testing.check_grads(lambda p, x: EFS(p, x, *rest), (params, r), order=2, seed=seed)


@pytest.mark.parametrize("stress", [False, True], ids=["forces", "stress"])
def test_inside_torch_func_transforms_equals_autograd(stress):
    """Under torch.func (as under compile) the derivatives come from torch.func.grad."""
    params, inputs = atoms_params(), atoms_inputs([3, 2], [True, False], seed=1)
    efs = atoms.energy_forces_stress(atoms_energy, stress=stress)
    total = lambda p: sum(t.pow(2).sum() for t in efs(p, *inputs) if t is not None)  # noqa: E731
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    want = dict(zip(leaves, torch.autograd.grad(total(leaves), list(leaves.values()))))
    torch.testing.assert_close(torch.func.grad(total)(params), want, rtol=1e-12, atol=1e-12)


def test_structures_do_not_leak_into_each_other():
    params = atoms_params()
    alone = EFS(params, *atoms_inputs([4], [True], seed=3))
    both = fg.atoms.collate(atoms_structures([4], [True], seed=3) + atoms_structures([1, 6], [False, True], seed=9),
                                dtype=torch.float64)
    i, j, s = atoms.neighbour_list(both.positions, both.cell, both.pbc, both.batch, ATOMS_CUTOFF)
    E, F, sigma = EFS(params, both.positions, both.cell, both.batch, both.numbers, i, j, s)
    torch.testing.assert_close(E[0], alone[0][0], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(F[:4], alone[1], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(sigma[0], alone[2][0], rtol=1e-13, atol=1e-13)


def _by_hand(params, inputs, labels, weights):
    """The force-matching loss and its param gradient, written with autograd.grad(create_graph=True)."""
    w_E, w_F, w_S = weights
    p = {k: v.detach().requires_grad_() for k, v in params.items()}
    r, cell, batch, *rest = inputs
    r = r.detach().requires_grad_()
    eps = torch.zeros_like(cell, requires_grad=True)
    eye = torch.eye(3, dtype=r.dtype)
    E = atoms_energy(p, torch.einsum("ni,nij->nj", r, eye + eps[batch]), cell @ (eye + eps), batch, *rest)
    dr, deps = torch.autograd.grad(E.sum(), (r, eps), create_graph=True)
    volume = torch.linalg.det(cell).abs()
    periodic = volume > 0
    sigma = (deps + deps.transpose(1, 2)) / 2 / torch.where(periodic, volume, 1)[:, None, None]
    n_atoms = torch.bincount(batch, minlength=len(cell)).to(r.dtype)
    E_ref, F_ref, S_ref = labels
    loss = (w_E * (((E - E_ref) / n_atoms) ** 2).mean() + w_F * ((-dr - F_ref) ** 2).mean()
            + w_S * ((sigma - S_ref)[periodic] ** 2).sum() / (9 * max(int(periodic.sum()), 1)))
    return loss.detach(), dict(zip(p, torch.autograd.grad(loss, list(p.values()))))


def _labels(inputs, seed):
    """Labels from another potential of the same form, so that the loss is far from 0."""
    E, F, sigma = EFS(atoms_params(seed=seed + 1), *inputs)
    return E, F, sigma


@pytest.mark.parametrize("sizes, periodic", [([3, 1, 5], [True, False, True]), ([3, 1, 5], [False, False, False]),
                                             ([4], [True])], ids=["mixed", "clusters", "one-cell"])
def test_force_matching_equals_the_hand_written_create_graph_loss(sizes, periodic):
    params, inputs = atoms_params(), atoms_inputs(sizes, periodic, seed=4)
    labels = _labels(inputs, 4)
    loss = atoms.force_matching(atoms_energy, energy_weight=1.0, force_weight=10.0, stress_weight=3.0)
    value, grads = fg.value_and_grad(loss)(params, *inputs, *labels)
    ref_value, ref_grads = _by_hand(params, inputs, labels, (1.0, 10.0, 3.0))
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grads, ref_grads, rtol=1e-10, atol=1e-12)


def test_force_matching_defaults_are_energy_per_atom_and_forces_with_weight_one():
    params, inputs = atoms_params(), atoms_inputs([3, 1, 5], [True, False, True], seed=4)
    E_ref, F_ref, S_ref = _labels(inputs, 4)
    value, grads = fg.value_and_grad(atoms.force_matching(atoms_energy))(params, *inputs, E_ref, F_ref)
    ref_value, ref_grads = _by_hand(params, inputs, (E_ref, F_ref, S_ref), (1.0, 1.0, 0.0))
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grads, ref_grads, rtol=1e-10, atol=1e-12)
    E, F, sigma = atoms.energy_forces_stress(atoms_energy)(params, *inputs)  # stress=False by default
    assert sigma is None


def test_force_matching_param_gradient_equals_finite_differences():
    inputs = atoms_inputs([2, 4], [False, True], seed=5)
    labels = _labels(inputs, 5)
    loss = atoms.force_matching(atoms_energy, stress_weight=1.0, energy="per_structure")
    fg.testing.check_grads(lambda p: loss(p, *inputs, *labels), (atoms_params(),), order=2)


def test_energy_only_and_per_structure_terms():
    params, inputs = atoms_params(), atoms_inputs([2, 3], [True, False], seed=6)
    E_ref, F_ref, _ = _labels(inputs, 6)
    E = atoms_energy(params, *inputs)
    energy_only = atoms.force_matching(atoms_energy, force_weight=0.0, energy="per_structure")
    torch.testing.assert_close(energy_only(params, *inputs, E_ref, F_ref), ((E - E_ref) ** 2).mean())
    per_atom = atoms.force_matching(atoms_energy, force_weight=0.0)
    torch.testing.assert_close(per_atom(params, *inputs, E_ref, F_ref),
                               (((E - E_ref) / torch.tensor([2.0, 3.0], dtype=E.dtype)) ** 2).mean())


def test_compiled_step_serves_ragged_batches_without_recompiling():
    loss = atoms.force_matching(atoms_energy, force_weight=10.0, stress_weight=1.0)
    opt = fg.optim.adam(1e-2)
    eager, compiled = fg.make_step(loss, opt), fg.make_step(loss, opt, compile=True)
    params = atoms_params()
    batches = [atoms_inputs(sizes, periodic, seed=k) for k, (sizes, periodic) in enumerate(
        [([3, 5], [True, False]), ([4, 2, 6], [False, True, True]), ([7, 3, 2, 5], [True, True, False, False])])]
    graphs = None
    for k, inputs in enumerate(batches):
        labels = _labels(inputs, k)
        state = opt.init(params)
        want = eager(params, state, *inputs, *labels)
        got = compiled(params, state, *inputs, *labels)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        count = compiled_graphs()
        graphs = count if graphs is None else graphs
        assert count == graphs, f"batch {k} ({[len(t) for t in inputs[:3]]}) compiled a new graph"


def test_agrees_with_ase_lennard_jones():
    """Energies, forces and stress (sign and convention) equal ASE's own calculator."""
    ase_build = pytest.importorskip("ase.build")
    from ase.calculators.lj import LennardJones
    from ase.cluster import Icosahedron

    rc = 2.5

    def lj(p, r, cell, batch, i, j, shifts):
        d = atoms.edge_vectors(r, cell, batch, i, j, shifts).norm(dim=1)
        s6, c6 = (p["sigma"] / d) ** 6, (p["sigma"] / rc) ** 6
        return torch.zeros(len(cell), dtype=r.dtype).index_add(0, batch[i], 2 * p["eps"] * (s6**2 - s6 - c6**2 + c6))

    structures = [ase_build.bulk("Ar", "fcc", a=1.6, cubic=True), ase_build.bulk("Ar", "fcc", a=1.6) * (2, 2, 1),
                  Icosahedron("Ar", 2, 1.1)]
    for k, s in enumerate(structures):
        s.rattle(0.05, seed=k)
        s.calc = LennardJones(sigma=1.0, epsilon=1.0, rc=rc)
        s.get_forces()
        if s.pbc.any():
            s.get_stress()
    b = atoms.collate(structures, dtype=torch.float64)
    assert b.stress is None  # the cluster has no stress label
    i, j, shifts = atoms.neighbour_list(b.positions, b.cell, b.pbc, b.batch, rc)
    one = torch.tensor(1.0, dtype=torch.float64)
    E, F, sigma = atoms.energy_forces_stress(lj, stress=True)({"eps": one, "sigma": one}, b.positions, b.cell,
                                                              b.batch, i, j, shifts)
    torch.testing.assert_close(E, b.energy, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(F, b.forces, rtol=1e-9, atol=1e-9)
    for k in (0, 1):
        torch.testing.assert_close(sigma[k], torch.as_tensor(structures[k].get_stress(voigt=False)), rtol=1e-9,
                                   atol=1e-9)
    assert (sigma[2] == 0).all()


def test_neighbour_list_equals_brute_force_over_images():
    small = {"positions": [[0.1, 0.2, 0.3]], "numbers": [0], "cell": 2 * torch.eye(3)}  # sees its own images
    b = atoms.collate(atoms_structures([1, 5, 4], [True, True, False], seed=7) + [small], dtype=torch.float64)
    i, j, shifts = atoms.neighbour_list(b.positions, b.cell, b.pbc, b.batch, ATOMS_CUTOFF)
    got = {(int(a), int(c), *map(int, s)) for a, c, s in zip(i, j, shifts)}
    assert len(got) == len(i)
    want = set()
    grid = torch.cartesian_prod(*[torch.arange(-4, 5)] * 3).to(torch.float64)
    for a in range(len(b.positions)):
        for c in range(len(b.positions)):
            if b.batch[a] != b.batch[c]:
                continue
            images = grid if b.pbc[b.batch[a]].any() else torch.zeros(1, 3, dtype=torch.float64)
            d = (b.positions[c] - b.positions[a] + images @ b.cell[b.batch[a]]).norm(dim=1)
            for s in images[(d < ATOMS_CUTOFF) & ~((a == c) & (images == 0).all(1))]:
                want.add((a, c, *map(int, s)))
    assert got == want
    assert any(a == c for a, c, *_ in got)


def test_collate_reads_labels_and_voigt_stress():
    voigt = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    b = atoms.collate([{"positions": [[0, 0, 0]], "numbers": [1], "cell": torch.eye(3), "energy": 1.5,
                        "forces": [[1, 2, 3]], "stress": voigt},
                       {"positions": [[0, 0, 0], [1, 1, 1]], "numbers": [1, 2], "energy": 2.0,
                        "forces": torch.zeros(2, 3), "stress": torch.zeros(3, 3)}], dtype=torch.float64)
    assert b.stress[0].tolist() == [[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]]
    assert b.energy.tolist() == [1.5, 2.0] and b.forces.shape == (3, 3) and b.batch.tolist() == [0, 1, 1]
    assert {t.dtype for t in (b.positions, b.cell, b.energy, b.forces, b.stress)} == {torch.float64}
    assert b.batch.dtype == torch.int64
    assert (b.cell[1] == 0).all() and not b.pbc[1].any() and b.pbc[0].all()


@pytest.mark.parametrize("call, match", [
    (lambda: atoms.energy_forces_stress(atoms_energy, stress=True)(atoms_params(), torch.zeros(2, 3), None,
                                                                   torch.zeros(2, dtype=torch.int64)),
     r"stress=True needs a cell per structure \[S, 3, 3\], got cell=None\. Pass the cells \(atoms\.collate gives "
     r"non-periodic structures a zero cell; their stress is 0\)\.$"),
    (lambda: atoms.energy_forces_stress(atoms_energy)(atoms_params(), torch.zeros(2, 2), None,
                                                      torch.zeros(2, dtype=torch.int64)),
     r"positions must be a floating tensor \[N, 3\], got a float32 tensor \[2, 2\]"),
    (lambda: atoms.energy_forces_stress(atoms_energy)(atoms_params(), torch.zeros(2, 3), None, torch.zeros(2)),
     r"batch must be an int64 tensor \[N\] = \[2\] giving each atom's structure, got a float32 tensor \[2\]\.$"),
    (lambda: atoms.energy_forces_stress(lambda p, r, c, b: r.sum(1))(None, torch.zeros(2, 3), torch.zeros(1, 3, 3),
                                                                     torch.zeros(2, dtype=torch.int64)),
     r"energy_fn must return one energy per structure, \[S\] = \[1\], got shape \[2\]"),
    (lambda: atoms.force_matching(atoms_energy, force_weight=-1.0), "force_weight must be"),
    (lambda: atoms.force_matching(atoms_energy, energy_weight=-1.0), "energy_weight must be a non-negative"),
    (lambda: atoms.force_matching(atoms_energy, stress_weight=-1.0), "stress_weight must be a non-negative"),
    (lambda: atoms.energy_forces_stress(atoms_energy)(atoms_params(), torch.zeros(2, 3, dtype=torch.float64),
                                                      torch.zeros(1, 3, 3), torch.zeros(2, dtype=torch.int64)),
     r"cell must be None or a tensor \[S, 3, 3\] of positions' dtype \(torch\.float64\), got a float32 tensor "
     r"\[1, 3, 3\]\.$"),
    (lambda: atoms.force_matching(atoms_energy, energy="atom"), "energy must be one of"),
    (lambda: atoms.force_matching(atoms_energy)(atoms_params(), *atoms_inputs([2], [False]), torch.zeros(2),
                                                torch.zeros(2, 3)),
     r"the energy label must be a tensor \[1\], got a float32 tensor \[2\]"),
    (lambda: atoms.neighbour_list(torch.zeros(1, 3), torch.zeros(1, 3, 3), torch.ones(1, 3, dtype=torch.bool),
                                  torch.zeros(1, dtype=torch.int64), 1.0), "cell .* is singular"),
    (lambda: atoms.neighbour_list(torch.zeros(2, 3), torch.stack([torch.eye(3), torch.zeros(3, 3)]),
                                  torch.ones(2, 3, dtype=torch.bool), torch.tensor([0, 1]), 1.0),
     r"structure 1 is periodic \(pbc \[.*\]\) but its cell .* is singular; give three independent lattice vectors\."),
    (lambda: atoms.collate([{"numbers": [1]}]), r"structure 0 must be a mapping with 'positions' and 'numbers'"),
    (lambda: atoms.collate([{"positions": torch.zeros(2, 3), "numbers": [1]}]), "2 positions but 1 numbers"),
], ids=lambda v: "" if callable(v) else _id(v))
def test_bad_inputs_get_clear_errors(call, match):  # ids: the mutation run deselects ids with "True"
    with pytest.raises((ValueError, TypeError), match=match) as error:
        call()
    assert str(error.value).startswith("atoms.")


def test_neighbour_list_without_pbc_is_periodic_where_the_cell_is_nonzero():
    b = atoms.collate(atoms_structures([3, 4], [True, False], seed=8), dtype=torch.float64)
    with_pbc = atoms.neighbour_list(b.positions, b.cell, b.pbc, b.batch, ATOMS_CUTOFF)
    without = atoms.neighbour_list(b.positions, b.cell, None, b.batch, ATOMS_CUTOFF)
    for a, c in zip(with_pbc, without):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    # no cell at all: the structures are clusters; the number of structures comes from batch
    i, j, shifts = atoms.neighbour_list(b.positions, None, None, b.batch, ATOMS_CUTOFF)
    assert (shifts == 0).all() and shifts.dtype == torch.float64 and (b.batch[i] == b.batch[j]).all()
    cluster = lambda i, j: {(int(x), int(y)) for x, y in zip(i, j) if b.batch[x] == 1}  # noqa: E731
    assert cluster(i, j) == cluster(*with_pbc[:2]) != set()  # the cluster's edges are unchanged
    empty = atoms.neighbour_list(torch.zeros(0, 3), None, None, torch.zeros(0, dtype=torch.int64), 1.0)
    assert [tuple(t.shape) for t in empty] == [(0,), (0,), (0, 3)]
    assert empty[0].dtype == torch.int64


def test_neighbour_list_of_a_partly_periodic_slab_repeats_only_along_its_periodic_axes():
    slab = {"positions": [[0.0, 0.0, 0.0]], "numbers": [0], "cell": 2 * torch.eye(3), "pbc": [True, True, False]}
    b = atoms.collate([slab], dtype=torch.float64)
    i, j, shifts = atoms.neighbour_list(b.positions, b.cell, b.pbc, b.batch, 2.5)
    assert (shifts[:, 2] == 0).all()
    assert {tuple(map(int, s)) for s in shifts} == {(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0)}


def test_collate_defaults_and_partial_labels():
    b = atoms.collate([{"positions": [[0, 0, 0]], "numbers": [1], "energy": 1.0},
                       {"positions": [[0, 0, 0]], "numbers": [1]}])
    assert b.positions.dtype == torch.get_default_dtype() and b.numbers.dtype == torch.int64
    assert b.energy is None and b.forces is None and b.stress is None  # not every structure has them
    assert (b.cell == 0).all() and not b.pbc.any()
    # a cell with pbc=False is dropped: nothing is periodic
    b = atoms.collate([{"positions": [[0, 0, 0]], "numbers": [1], "cell": torch.eye(3), "pbc": False}])
    assert (b.cell == 0).all() and not b.pbc.any()


@pytest.mark.parametrize("call, error, match", [
    (lambda: atoms.collate([]), ValueError, r"^atoms\.collate: got no structures"),
    (lambda: atoms.collate([[0, 0, 0]]), TypeError, r"^atoms\.collate: structure 0 must be a mapping .*got list"),
    (lambda: atoms.collate([{"positions": [[0, 0, 0]], "numbers": [1], "cell": torch.eye(2)}]), ValueError,
     r"^atoms\.collate: structure 0 has a cell of shape \[2, 2\]; give \[3, 3\] \(rows are the lattice vectors\)\.$"),
    (lambda: atoms.neighbour_list(torch.zeros(1, 3), None, None, torch.zeros(1, dtype=torch.int64), 0), ValueError,
     r"^atoms\.neighbour_list: cutoff must be a positive number, got 0"),
    (lambda: atoms.energy_forces_stress(atoms_energy)(atoms_params(), torch.zeros(2, 3), torch.zeros(2, 3),
                                                      torch.zeros(2, dtype=torch.int64)), ValueError,
     r"^atoms\.energy_forces_stress: cell must be None or a tensor \[S, 3, 3\] of positions' dtype \(torch\.float32\)"),
    (lambda: atoms.energy_forces_stress(atoms_energy, stress=1), TypeError, r"stress must be True or False, got 1"),
    (lambda: atoms.energy_forces_stress(None), TypeError,
     r"^atoms\.energy_forces_stress: energy_fn must be callable, got NoneType"),
    (lambda: atoms.force_matching(None), TypeError, r"^atoms\.force_matching: energy_fn must be callable, got NoneType"),
    (lambda: atoms.force_matching(atoms_energy, stress_weight=1.0)(atoms_params(), torch.zeros(2, 3)), TypeError,
     r"^atoms\.force_matching: expected \(params, positions, cell, batch, \*args, energy, forces, stress\): got 2"),
    (lambda: atoms.force_matching(atoms_energy)(atoms_params(), *atoms_inputs([2], [True]), torch.zeros(1),
                                                torch.zeros(3, 3, dtype=torch.float64)), ValueError,
     r"the forces label must be a tensor \[2, 3\], got a float64 tensor \[3, 3\]\. The labels are the last 2 "
     r"arguments \(energy, forces\); stress is one of them only when stress_weight > 0\.$"),
], ids=lambda v: "" if callable(v) or isinstance(v, type) else _id(v))
def test_more_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _harmonic(p, r, cell, batch):
    """A harmonic well per atom, two structures, no cell needed."""
    return torch.zeros(2, dtype=r.dtype).index_add(0, batch, p["k"] * (r ** 2).sum(1))


def test_force_matching_with_the_fewest_arguments_and_no_cell():
    p = {"k": torch.tensor(0.7, dtype=torch.float64)}
    r = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    batch = torch.tensor([0, 0, 1])
    E, F, _ = atoms.energy_forces_stress(_harmonic)(p, r, None, batch)
    torch.testing.assert_close(F, -2 * 0.7 * r)
    loss = atoms.force_matching(_harmonic)  # (params, positions, cell, batch, energy, forces): nothing in *args
    assert repr(loss) == "<atoms.force_matching loss>"
    value = loss(p, r, None, batch, E + torch.tensor([0.2, 0.3], dtype=torch.float64), F + 0.1)
    torch.testing.assert_close(value, ((torch.tensor([0.1, 0.3]) ** 2).mean() + 0.01).to(value.dtype))
    with pytest.raises(ValueError, match=r"the forces label must be a tensor \[3, 3\], got a float64 tensor \[3\]"):
        loss(p, r, None, batch, E, F[:, 0])
    with pytest.raises(ValueError, match=r"the energy label must be a tensor \[S\], got a float64 tensor \[2, 1\]"):
        loss(p, r, None, batch, E[:, None], F)
    with pytest.raises(TypeError, match=r"expected \(params, positions, cell, batch, \*args, energy, forces\): got 4 "):
        loss(p, r, None, batch)
    with pytest.raises(ValueError, match=r"^atoms\.force_matching: the stress label must be a tensor \[2, 3, 3\]"):
        atoms.force_matching(_harmonic, stress_weight=1.0)(p, r, torch.zeros(2, 3, 3, dtype=torch.float64), batch, E,
                                                           F, torch.zeros(2, 3))


def test_energy_only_loss_checks_energy_fn_output():
    loss = atoms.force_matching(lambda p, r, cell, batch: r.sum(1), force_weight=0.0)
    r, cell, batch = torch.zeros(3, 3), torch.zeros(2, 3, 3), torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match=r"^atoms\.force_matching: energy_fn must return one energy per structure, "
                                         r"\[S\] = \[2\], got shape \[3\]"):
        loss(None, r, cell, batch, torch.zeros(2), torch.zeros(3, 3))
    efs = atoms.energy_forces_stress(lambda p, r, cell, batch: [r.sum()], stress=True)
    with pytest.raises(TypeError, match=r"^atoms\.energy_forces_stress: energy_fn must return a tensor, got list"):
        efs(None, r, cell, batch)
    efs = atoms.energy_forces_stress(lambda p, r, cell, batch: r.sum(1), stress=True)
    with pytest.raises(ValueError, match=r"^atoms\.energy_forces_stress: energy_fn must return one energy per "
                                         r"structure, \[S\] = \[2\], got shape \[3\]\. Sum atomic energies per "
                                         r"structure, e\.g\. torch\.zeros\(cell\.shape\[0\]\)\.index_add\(0, batch, "
                                         r"atomic_energies\)\.$"):
        efs(None, r, cell, batch)
    with pytest.raises(ValueError, match=r"energy per structure, \[S\], got shape \[\]"):
        atoms.energy_forces_stress(lambda p, r, cell, batch: r.sum())(None, r, None, batch)


def test_stress_is_symmetric_for_a_model_that_is_not_rotation_invariant():
    """The strain is symmetrised, so the stress is the derivative along symmetric strains even
    where dE/d(strain) itself is not symmetric; small cells (volume < 1) and the unit cube too."""
    a, b = torch.tensor([1.0, 0.2, 0.0], dtype=torch.float64), torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)

    def skewed(p, r, cell, batch):
        return torch.zeros(len(cell), dtype=r.dtype).index_add(0, batch, p * (r @ a) * (r @ b))

    g = torch.Generator().manual_seed(1)
    cells = torch.stack([0.8 * torch.eye(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)])
    r = torch.randn(4, 3, generator=g, dtype=torch.float64)
    batch = torch.tensor([0, 0, 1, 1])
    p = torch.tensor(1.3, dtype=torch.float64)
    _, _, sigma = atoms.energy_forces_stress(skewed, stress=True)(p, r, cells, batch)
    torch.testing.assert_close(sigma, sigma.transpose(1, 2))
    h = 1e-6
    for i, j in [(0, 1), (1, 2), (0, 0)]:
        M = torch.zeros(2, 3, 3, dtype=torch.float64)
        M[:, i, j] += 0.5
        M[:, j, i] += 0.5
        energy = lambda t: skewed(p, *_strained((r, cells, batch), t, M))  # noqa: E731
        fd = (energy(h) - energy(-h)) / (2 * h) / torch.tensor([0.8 ** 3, 1.0], dtype=torch.float64)
        torch.testing.assert_close(sigma[:, i, j], fd, rtol=1e-7, atol=1e-9)
    # the stress term masks by det(cell) != 0 only: the unit cube counts
    loss = atoms.force_matching(skewed, force_weight=0.0, stress_weight=1.0, energy="per_structure")
    E = skewed(p, r, cells, batch)
    value = loss(p, r, cells, batch, E, torch.zeros(4, 3, dtype=torch.float64), torch.zeros(2, 3, 3, dtype=torch.float64))
    torch.testing.assert_close(value, sigma.pow(2).sum() / 18)


def test_neighbour_list_edges_at_the_cutoff_and_edge_vectors_without_shifts():
    r = torch.tensor([[0.0, 0, 0], [1.5, 0, 0], [0, 1.4, 0]])
    i, j, _ = atoms.neighbour_list(r, None, None, torch.zeros(3, dtype=torch.int64), 1.5)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 2), (2, 0)]  # exactly at the cutoff: not a neighbour
    cell, batch = torch.eye(3)[None] * 4, torch.zeros(3, dtype=torch.int64)
    torch.testing.assert_close(atoms.edge_vectors(r, cell, batch, i, j, None), r[j] - r[i])
    shifts = torch.tensor([[1, 0, 0], [0, -1, 0]])  # integer shifts are cast to positions' dtype
    torch.testing.assert_close(atoms.edge_vectors(r, cell, batch, i, j, shifts),
                               r[j] - r[i] + torch.tensor([[4.0, 0, 0], [0, -4.0, 0]]))


def test_neighbour_list_of_unwrapped_atoms_and_small_cells_equals_brute_force():
    """Atoms outside their cell (unwrapped) and cells smaller than the cutoff need more images."""
    cell = torch.tensor([[2.0, 0, 0], [0.3, 1.8, 0], [0, 0.2, 2.2]], dtype=torch.float64)
    r = torch.tensor([[0.1, 0.2, 0.3], [1.0, 0.5, 0.4]], dtype=torch.float64)
    unwrapped = r + torch.tensor([[5.0], [-4.0]], dtype=torch.float64) * cell[0]  # far outside the cell
    tiny = torch.tensor([[0.5, 0, 0], [0.4, 0.5, 0], [0, 0, 0.6]], dtype=torch.float64)  # skewed, far below the cutoff
    b = atoms.collate([{"positions": unwrapped, "numbers": [0, 0], "cell": cell},
                       {"positions": [[0.2, 0.1, 0.0]], "numbers": [0], "cell": tiny}], dtype=torch.float64)
    i, j, shifts = atoms.neighbour_list(b.positions, b.cell, b.pbc, b.batch, 2.5)
    got = {(int(x), int(y), *map(int, s)) for x, y, s in zip(i, j, shifts)}
    grid = torch.cartesian_prod(*[torch.arange(-12, 13)] * 3).to(torch.float64)
    want = set()
    for x in range(3):
        for y in range(3):
            if b.batch[x] == b.batch[y]:
                d = (b.positions[y] - b.positions[x] + grid @ b.cell[b.batch[x]]).norm(dim=1)
                want |= {(x, y, *map(int, s)) for s in grid[(d < 2.5) & ~((x == y) & (grid == 0).all(1))]}
    assert got == want


def test_collate_reads_ase_stress_and_casts_numbers_and_pbc():
    np = pytest.importorskip("numpy")
    b = atoms.collate([{"positions": np.zeros((1, 3)), "numbers": np.array([8], dtype=np.int32),
                        "cell": np.eye(3), "pbc": [1, 1, 0]}])
    assert b.numbers.dtype == torch.int64 and b.pbc.dtype == torch.bool and b.pbc.tolist() == [[True, True, False]]
    with pytest.raises(TypeError, match=r"^atoms\.collate: structure 0 must be a mapping with 'positions' and "
                                        r"'numbers' \(or an ase\.Atoms\), got dict"):
        atoms.collate([{"positions": [[0, 0, 0]]}])
    ase_build = pytest.importorskip("ase.build")
    from ase.calculators.emt import EMT

    s = ase_build.bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    s.rattle(0.05, seed=0)
    s.calc = EMT()
    s.get_stress()
    s.get_forces()
    b = atoms.collate([s], dtype=torch.float64)
    torch.testing.assert_close(b.stress[0], torch.as_tensor(s.get_stress(voigt=False)))
    torch.testing.assert_close(b.forces, torch.as_tensor(s.get_forces()))
    assert b.energy.item() == s.get_potential_energy()
    unlabelled = ase_build.bulk("Cu", "fcc", a=3.6)
    assert atoms.collate([unlabelled]).energy is None  # no calculator: no labels
