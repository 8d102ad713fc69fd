"""Tests of metarec_core.row_adam: Adam on the rows a step looked up, and those rows' gradient from a sparse lookup."""
import pytest
import torch

from metarec_core.row_adam import RowAdam, row_gradient


def grads(steps: int, shape: tuple[int, int]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=generator) for _ in range(steps)]


def test_row_adam_on_every_row_is_dense_adam():
    table = torch.nn.Parameter(torch.randn(6, 3))
    twin = torch.nn.Parameter(table.detach().clone())
    rows, dense = RowAdam([table], lr=0.01), torch.optim.Adam([twin], lr=0.01)
    every = torch.arange(6)
    for g in grads(20, (6, 3)):
        rows.step([(every, g)])
        twin.grad = g.clone()
        dense.step()
    assert torch.allclose(table, twin, atol=1e-6)


def test_row_adam_leaves_rows_it_is_not_given_alone_and_follows_adam_on_the_others():
    table = torch.nn.Parameter(torch.randn(6, 3))
    start = table.detach().clone()
    twin = torch.nn.Parameter(start[:2].clone())  # rows 0 and 1, looked up at every step
    rows, dense = RowAdam([table], lr=0.01), torch.optim.Adam([twin], lr=0.01)
    for k, g in enumerate(grads(30, (6, 3))):
        touched = torch.tensor([0, 1, 3]) if k % 3 == 0 else torch.tensor([0, 1])
        rows.step([(touched, g[touched])])
        twin.grad = g[:2].clone()
        dense.step()
    assert torch.allclose(table[:2], twin, atol=1e-6)
    assert not torch.allclose(table[3], start[3])  # looked up every third step: it moved
    for never in (2, 4, 5):
        assert torch.equal(table[never], start[never])
        assert torch.equal(rows.state[table]["exp_avg"][never], torch.zeros(3))
    with pytest.raises(ValueError, match="each of its 1 tables"):
        rows.step([])


def test_row_gradient_of_a_sparse_lookup_equals_the_dense_gradient_on_those_rows():
    weights = torch.randn(10, 4)
    looked_up = torch.tensor([[3, 7, 3, 0], [9, 7, 0, 0]])  # repeats; 0 is padding of loss weight 0
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    target = torch.randn(2, 4)
    results = []
    for sparse in (True, False):
        embedding = torch.nn.Embedding(10, 4, sparse=sparse)
        with torch.no_grad():
            embedding.weight.copy_(weights)
        ((embedding(looked_up).sum(-1) - target) ** 2 * mask).sum().backward()
        results.append(embedding.weight)
    rows = torch.tensor([3, 7, 9])
    slots = torch.full((10,), -1, dtype=torch.long)
    from_sparse = row_gradient(results[0], rows, slots)
    assert results[0].grad.is_sparse
    assert torch.allclose(from_sparse, results[1].grad[rows], atol=1e-6)
    assert torch.equal(slots, torch.full((10,), -1, dtype=torch.long))  # the scratch vector is left as found
    assert torch.allclose(row_gradient(results[1], rows, slots), results[1].grad[rows])


def test_coasting_moves_a_left_out_row_as_dense_adam_does_on_its_momentum():
    """A row left out for 25 steps: with coast, its next update lands where dense Adam (zero gradient meanwhile) puts it."""
    table = torch.nn.Parameter(torch.randn(2, 3))
    twin = torch.nn.Parameter(table.detach().clone())
    plain = torch.nn.Parameter(table.detach().clone())
    rows, dense = RowAdam([table], lr=0.01, coast=True), torch.optim.Adam([twin], lr=0.01)
    lazy = RowAdam([plain], lr=0.01)
    both, first = torch.tensor([0, 1]), torch.tensor([0])
    for k, g in enumerate(grads(560, (2, 3))):
        left_out = 500 <= k < 525  # row 1 is not looked up in these steps
        touched = first if left_out else both
        rows.step([(touched, g[touched])])
        lazy.step([(touched, g[touched])])
        twin.grad = g.clone()
        if left_out:
            twin.grad[1] = 0.0
        dense.step()
        if k == 525:
            coasted, lagged = float((table[1] - twin[1]).detach().abs().max()), float((plain[1] - twin[1]).detach().abs().max())
            assert coasted < 0.1 * lagged  # without coasting the row lags behind dense Adam
    assert torch.allclose(table[0], twin[0], atol=1e-5)
