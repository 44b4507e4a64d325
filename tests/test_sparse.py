"""The sparse helpers against dense numpy on random matrices, and the per-batch memo."""

import numpy as np
import pytest
import scipy.sparse as sp

from funnel.batch import Batch
from funnel.ranking.features import pair_scores, stack_columns
from funnel.sparse import (
    csr_from_arrays,
    csr_to_arrays,
    leading_entries,
    lookup,
    most_first,
    row_of_entries,
    select_columns,
    top_n_per_row,
    weighted,
)


def _unsorted(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """The same matrix with each row's stored entries in reversed order."""
    out = matrix.copy()
    for row in range(out.shape[0]):
        part = slice(out.indptr[row], out.indptr[row + 1])
        out.indices[part] = out.indices[part][::-1]
        out.data[part] = out.data[part][::-1]
    out.has_sorted_indices = False
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("pairs", ["random", "sorted unique"])
@pytest.mark.parametrize("via", ["dense copy", "entry search"])
def test_lookup_matches_dense(seed: int, pairs: str, via: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if via == "entry search":
        monkeypatch.setattr("funnel.sparse.DENSE_LOOKUP_CELLS", 0)
    rng = np.random.default_rng(seed)
    matrix = sp.random(30, 40, density=0.3, random_state=seed, format="csr", dtype=np.float32)
    rows, cols = rng.integers(0, 30, 500), rng.integers(0, 40, 500)
    if pairs == "sorted unique":
        keys = np.unique(rows * 40 + cols)
        rows, cols = keys // 40, keys % 40
    dense = matrix.toarray()
    for m in (matrix, _unsorted(matrix)):
        np.testing.assert_array_equal(lookup(m, rows, cols), dense[rows, cols])


def test_lookup_empty() -> None:
    empty = sp.csr_matrix((3, 4), dtype=np.float32)
    assert lookup(empty, np.array([0, 2]), np.array([1, 3])).tolist() == [0.0, 0.0]
    assert lookup(sp.eye(3, format="csr"), np.array([], int), np.array([], int)).shape == (0,)


def test_top_n_per_row_orders_by_score_then_column() -> None:
    rows = np.array([1, 0, 0, 1, 0, 1])
    scores = np.array([0.5, 0.2, 0.9, 0.5, 0.2, 0.1])
    cols = np.array([7, 3, 4, 2, 1, 9])
    positions, ranks = top_n_per_row(rows, scores, cols, 2)
    assert list(zip(rows[positions], cols[positions], ranks)) == [(0, 4, 1), (0, 1, 2), (1, 2, 1), (1, 7, 2)]


@pytest.mark.parametrize("n_users, n_items", [(7, 50), (400, 2000)])
def test_pair_scores_match_a_dense_product(n_users: int, n_items: int) -> None:
    # 7 x 50 is covered densely by the pairs (one product); 400 x 2000 is not (gathered in chunks)
    rng = np.random.default_rng(0)
    users = rng.normal(size=(n_users, 600)).astype(np.float32)
    items = rng.normal(size=(n_items, 600)).astype(np.float32)
    rows, cols = rng.integers(0, n_users, 3000), rng.integers(0, n_items, 3000)
    np.testing.assert_allclose(pair_scores(users, items, rows, cols), (users @ items.T)[rows, cols], rtol=1e-4,
                               atol=1e-3)


def test_stack_columns_keeps_order_and_values() -> None:
    a, b = np.arange(4.0), np.arange(8.0).reshape(4, 2)
    stacked = stack_columns([a, b, a[:, None]], 4)
    assert stacked.dtype == np.float32
    np.testing.assert_array_equal(stacked, np.column_stack([a, b, a]))


@pytest.mark.parametrize("seed", range(20))
def test_top_n_per_row_matches_a_full_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(0, 300)) if seed < 4 else int(rng.integers(4096, 6000))  # below / above the pre-selection
    rows = np.sort(rng.integers(0, 40, size)) if seed % 2 else rng.integers(0, 40, size)
    if seed % 4 == 3:  # row lengths from 1 to about 140: several length classes, many rows below n
        rows = np.sort(np.minimum(rng.geometric(0.02, size), 400) - 1)
    scores = rng.integers(0, 5, size).astype(np.float32)  # many ties
    cols = rng.permutation(size)
    n = int(rng.integers(1, 30))
    order = np.lexsort((cols, -scores, rows))  # the plain full sort
    sorted_rows = rows[order]
    within = np.arange(size) - np.searchsorted(sorted_rows, sorted_rows)
    expected = [(int(i), int(w) + 1) for i, w in zip(order, within) if w < n]
    positions, ranks = top_n_per_row(rows, scores, cols, n)
    assert list(zip(positions.tolist(), ranks.tolist())) == expected


@pytest.mark.parametrize("kind, expected", [("binary", lambda d: (d > 0) * 1.0), ("log", np.log1p),
                                             ("raw", lambda d: d)])
def test_weighted_matches_dense_and_leaves_the_input_alone(kind, expected) -> None:
    plays = sp.random(20, 30, density=0.2, random_state=1, format="csr", dtype=np.float64) * 50
    before = plays.copy()
    out = weighted(plays, kind)
    assert out.dtype == np.float32 and out.format == "csr"
    np.testing.assert_allclose(out.toarray(), expected(plays.toarray()), rtol=1e-6)
    out.data[:] = -1.0
    out.indices[:] = 0
    assert (plays != before).nnz == 0  # the result shares no arrays with the input


def test_row_of_entries_names_each_stored_entry_row() -> None:
    matrix = sp.random(15, 10, density=0.3, random_state=2, format="csr")
    coo = matrix.tocoo()
    np.testing.assert_array_equal(row_of_entries(matrix), coo.row)


def test_batch_memo_computes_once_per_batch_owner_and_name() -> None:
    calls = []
    history = sp.csr_matrix(np.eye(3, dtype=np.float32))
    first, second = Batch(np.arange(3), history), Batch(np.arange(3), history)
    owner, other = object(), object()
    compute = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert first.memo(owner, "x", compute) == 1
    assert first.memo(owner, "x", compute) == 1  # the same batch, owner and name: remembered
    assert first.memo(owner, "y", compute) == 2  # another name
    assert first.memo(other, "x", compute) == 3  # another owner
    assert second.memo(owner, "x", compute) == 4  # another batch of the same users and history
    assert first.memo(owner, "x", compute) == 1  # nothing was evicted


def test_batch_checks_its_rows_and_measures_its_history() -> None:
    history = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 0], [1, 1, 1]], np.float32))
    batch = Batch([4, -1, 0], history)
    assert len(batch) == 3 and batch.users.dtype == np.int64 and batch.max_known() == 3
    assert Batch(np.zeros(0, np.int64), sp.csr_matrix((0, 3))).max_known() == 0
    with pytest.raises(ValueError, match="needs as many history rows"):
        Batch(np.arange(2), history)


def test_select_columns_matches_fancy_indexing() -> None:
    matrix = sp.random(12, 20, density=0.3, random_state=4, format="csr", dtype=np.float32)
    keep = np.array([17, 2, 5, 11])
    position = np.full(20, -1)
    position[keep] = np.arange(len(keep))
    np.testing.assert_array_equal(select_columns(matrix, position, len(keep)).toarray(), matrix[:, keep].toarray())


def test_csr_arrays_round_trip() -> None:
    matrix = sp.random(9, 7, density=0.4, random_state=6, format="csr", dtype=np.float32)
    restored = csr_from_arrays(csr_to_arrays(matrix, "m/"), "m/")
    assert restored.shape == matrix.shape and restored.dtype == np.float32
    np.testing.assert_array_equal(restored.toarray(), matrix.toarray())


@pytest.mark.parametrize("shift", [0.0, 0.5])  # whole counts (one sort key) and fractions (lexsort)
def test_most_first_orders_each_row_by_value_then_column(shift: float) -> None:
    values = np.array([[0, 2, 5, 2, 0], [0, 0, 0, 0, 0], [1, 0, 3, 0, 7]], np.float32)
    matrix = sp.csr_matrix(np.where(values > 0, values + shift, 0.0).astype(np.float32))
    ordered = most_first(matrix)
    assert ordered.indices.tolist() == [2, 1, 3, 4, 2, 0]
    assert ordered.data.tolist() == [v + shift for v in [5, 2, 2, 7, 3, 1]]
    assert (ordered != matrix).nnz == 0  # the same matrix, stored in another order
    assert most_first(ordered) is ordered
    cols, values = leading_entries(ordered, 2)
    assert cols.tolist() == [[2, 1], [-1, -1], [4, 2]]
    assert values[1].tolist() == [-np.inf, -np.inf] and values[2].tolist() == [7 + shift, 3 + shift]
    empty_cols, _ = leading_entries(sp.csr_matrix((2, 4), dtype=np.float32), 3)
    assert (empty_cols == -1).all()


def test_select_rows_gives_empty_rows_for_minus_one_and_keeps_entry_order():
    from funnel.sparse import select_rows

    # row 1 stores its entries out of column order, as most_first leaves them
    matrix = sp.csr_matrix((np.array([1, 5, 4, 2], np.float32), np.array([0, 3, 1, 2]), np.array([0, 1, 4])),
                           shape=(2, 4))
    picked = select_rows(matrix, np.array([1, -1, 0, 1]))
    assert picked.shape == (4, 4)
    assert np.diff(picked.indptr).tolist() == [3, 0, 1, 3]
    assert picked.indices.tolist() == [3, 1, 2, 0, 3, 1, 2] and picked.data.tolist() == [5, 4, 2, 1, 5, 4, 2]
    empty = select_rows(sp.csr_matrix((0, 4), dtype=np.float32), np.array([-1, -1]))  # a matrix with no rows
    assert empty.shape == (2, 4) and empty.nnz == 0


def test_moved_keeps_each_rows_stored_order():
    from funnel.sparse import moved

    # rows stored largest first, not by column
    matrix = sp.csr_matrix((np.array([3.0, 1.0, 5.0, 2.0, 4.0], np.float32), np.array([2, 0, 1, 2, 0]),
                            np.array([0, 2, 2, 5])), shape=(3, 3))
    out = moved(matrix, np.array([0, 2, 3]), np.array([1, 3, 4]), (5, 6))
    assert out.shape == (5, 6)
    np.testing.assert_array_equal(out.data, matrix.data)
    np.testing.assert_array_equal(out.indices, [4, 1, 3, 4, 1])
    np.testing.assert_array_equal(out.toarray()[[0, 2, 3]][:, [1, 3, 4]], matrix.toarray())
    assert out[1].nnz == 0 and out[4].nnz == 0
    grown = moved(matrix, None, np.arange(3), (4, 3))  # rows kept, one appended
    np.testing.assert_array_equal(grown.toarray()[:3], matrix.toarray())
    assert grown[3].nnz == 0
