from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigd import MiniBatches
from minigd.batching import BlockLayout, BlockShuffle, batch_bounds
from minigd.batching.sizes import Cut

policies = st.sampled_from(["keep", "drop", "merge"])


@st.composite
def setups(draw):
    m = draw(st.integers(1, 300))
    batch_size = draw(st.integers(1, m))
    return m, batch_size, draw(policies), draw(st.integers(0, 2**31 - 1))


def ids_of(batches, e, start=0):
    """Each sample's features hold its index, so a batch tells which samples it holds."""
    return [xb[:, 0].astype(int).tolist() for xb, _ in batches.epoch(e, start)]


def make(m, batch_size, last_batch, seed, **kw):
    X = np.repeat(np.arange(m, dtype=np.float64)[:, None], 3, axis=1)
    y = np.arange(m)
    return MiniBatches(X, y, batch_size=batch_size, last_batch=last_batch, seed=seed, **kw)


@settings(max_examples=150, deadline=None)
@given(setups())
def test_every_sample_once_per_epoch_with_keep_and_merge(setup):
    m, b, policy, seed = setup
    batches = make(m, b, policy, seed)
    seen = [i for batch in ids_of(batches, 3) for i in batch]
    if policy in ("keep", "merge"):
        assert sorted(seen) == list(range(m))
    else:
        assert len(seen) == len(set(seen)) == (m // b) * b


@settings(max_examples=150, deadline=None)
@given(setups())
def test_batch_sizes_follow_the_policy(setup):
    m, b, policy, seed = setup
    batches = make(m, b, policy, seed)
    sizes = [len(batch) for batch in ids_of(batches, 0)]
    full, rest = divmod(m, b)
    expected = {
        "keep": [b] * full + ([rest] if rest else []),
        "drop": [b] * full,
        "merge": [b] * (full - 1) + [b + rest],
    }[policy]
    assert sizes == expected == batches.batch_sizes
    assert len(batches) == len(expected)


@settings(max_examples=100, deadline=None)
@given(setups())
def test_order_is_a_pure_function_of_seed_and_epoch(setup):
    m, b, policy, seed = setup
    first = ids_of(make(m, b, policy, seed), 5)
    again = ids_of(make(m, b, policy, seed), 5)
    assert first == again


@pytest.mark.parametrize("seed", range(5))
def test_different_epochs_and_seeds_give_different_batches(seed):
    # 200 samples in batches of 10: two batchings agreeing by chance is out of the question
    a, b = make(200, 10, "keep", seed), make(200, 10, "keep", seed + 100)
    assert ids_of(a, 0) != ids_of(a, 1)
    assert ids_of(a, 0) != ids_of(b, 0)


@settings(max_examples=100, deadline=None)
@given(setups())
def test_sample_axis_1_on_transpose_gives_the_same_batches(setup):
    m, b, policy, seed = setup
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, 4)).astype(np.float32)
    y = rng.integers(0, 3, m)
    rows = MiniBatches(X, y, batch_size=b, last_batch=policy, seed=seed)
    cols = MiniBatches(X.T, y, batch_size=b, last_batch=policy, seed=seed, sample_axis=1)
    for (xa, ya), (xb, yb) in zip(rows.epoch(2), cols.epoch(2), strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


@settings(max_examples=100, deadline=None)
@given(setups(), st.data())
def test_start_yields_exactly_the_tail(setup, data):
    m, b, policy, seed = setup
    batches = make(m, b, policy, seed)
    k = data.draw(st.integers(0, len(batches)))
    assert ids_of(batches, 4, start=k) == ids_of(batches, 4)[k:]


def test_shuffle_false_keeps_natural_order_and_views():
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    batches = MiniBatches(X, batch_size=4, shuffle=False)
    got = list(batches.epoch(7))
    np.testing.assert_array_equal(np.concatenate(got), X)
    assert np.shares_memory(got[0], X)  # no copy without shuffling


def test_note_layout_y_row_vector():
    X = np.random.default_rng(0).normal(size=(784, 100))
    Y = np.arange(100)[None, :]  # the note's Y = (1, m)
    batches = MiniBatches(X, Y, batch_size=10, sample_axis=1)
    assert batches.X.shape == (100, 784) and batches.X.flags.c_contiguous
    xb, yb = next(iter(batches.epoch(0)))
    np.testing.assert_array_equal(xb, X.T[yb[:, 0]])


def test_full_batch_is_one_batch_of_everything():
    X = np.ones((50, 3))
    batches = MiniBatches(X, batch_size="full")
    assert len(batches) == 1 and batches.batch_sizes == [50]


def test_buffers_are_reused_between_steps():
    batches = MiniBatches(np.ones((100, 3)), batch_size=10)
    it = batches.epoch(0)
    first = next(it)
    second = next(it)
    assert first is second  # the same buffer, overwritten: documented lifetime


def test_iterating_twice_gives_successive_epochs():
    batches = make(30, 7, "keep", 1)
    a = [xb[:, 0].tolist() for xb, _ in batches]
    b = [xb[:, 0].tolist() for xb, _ in batches]
    assert a == ids_of(batches, 0) and b == ids_of(batches, 1)


def test_ints_become_float32_and_float64_is_kept_without_copy():
    assert MiniBatches(np.ones((4, 2), dtype=np.uint8), batch_size=2).X.dtype == np.float32
    X = np.ones((4, 2))
    assert MiniBatches(X, batch_size=2).X is X


def test_merge_with_no_remainder_equals_keep():
    np.testing.assert_array_equal(batch_bounds(12, 4, "merge"), batch_bounds(12, 4, "keep"))


@pytest.mark.parametrize(
    ("batch_size", "error", "words"),
    [
        (0, ValueError, "received 0"),
        (-3, ValueError, "received -3"),
        (2.5, TypeError, "received 2.5"),
        (True, TypeError, "received True"),
        ("half", ValueError, "'half'"),
        (11, ValueError, 'batch_size="full"'),
    ],
)
def test_bad_batch_sizes(batch_size, error, words):
    with pytest.raises(error, match="batch_size") as info:
        MiniBatches(np.ones((10, 2)), batch_size=batch_size)
    assert words in str(info.value)


def test_bad_data_errors_say_what_and_where():
    with pytest.raises(ValueError, match="same number of samples; X has 10 and y has 9"):
        MiniBatches(np.ones((10, 2)), np.ones(9), batch_size=2)
    with pytest.raises(ValueError, match="non-empty"):
        MiniBatches(np.ones((0, 2)), batch_size=1)
    with pytest.raises(TypeError, match="numeric"):
        MiniBatches(np.array([["a", "b"]]), batch_size=1)
    X = np.ones((10, 2))
    X[6, 1] = np.nan
    with pytest.raises(ValueError, match="sample 6"):
        MiniBatches(X, batch_size=2)
    X[6, 1] = np.inf
    with pytest.raises(ValueError, match="sample 6"):
        MiniBatches(X, batch_size=2)
    with pytest.raises(ValueError, match=r"shape \(m,\) or \(m, k\)"):
        MiniBatches(np.ones((10, 2)), np.ones((10, 2, 2)), batch_size=2)
    with pytest.raises(ValueError, match="transposed"):
        MiniBatches(np.ones((10, 2)), np.ones((3, 10)), batch_size=2)
    with pytest.raises(ValueError, match="last_batch"):
        MiniBatches(np.ones((10, 2)), batch_size=2, last_batch="pad")
    with pytest.raises(ValueError, match="start"):
        MiniBatches(np.ones((10, 2)), batch_size=2).epoch(0, start=6)


@settings(max_examples=50, deadline=None)
@given(setups())
def test_batches_hold_the_permutations_chunks_in_ascending_order(setup):
    m, b, policy, seed = setup
    batches = make(m, b, policy, seed)
    perm = np.random.default_rng((seed, 2)).permutation(m)
    bounds = np.cumsum([0, *batches.batch_sizes])
    for (lo, hi), got in zip(pairwise(bounds), ids_of(batches, 2), strict=True):
        assert got == sorted(perm[lo:hi].tolist())  # same samples, gathered in address order


# a cut of m rows in batches of `first`, regrouped at fractions of the epoch to other sizes
REGROUPS = {
    "m": st.integers(1, 300),
    "first": st.integers(1, 300),
    "moves": st.lists(st.tuples(st.floats(0, 1), st.integers(1, 300)), max_size=4),
    "last": st.sampled_from(["keep", "drop", "merge"]),
}


@settings(max_examples=150, deadline=None)
@given(**REGROUPS, epochs=st.lists(st.integers(0, 3), min_size=1, max_size=4))
def test_a_regrouped_epoch_holds_the_permutations_chunks_in_ascending_order(
    m, first, moves, last, epochs
):
    """Each batch of a cut regrouped any number of times (runs of equal batches, sorted a run
    at a time) is its chunk of the epoch's permutation, sorted, whichever epochs were ordered
    before (the permutation is kept between calls)."""
    batches = MiniBatches(np.zeros((m, 1)), batch_size=min(first, m), last_batch=last, seed=5)
    for where, b in moves:
        batches.regroup(min(b, m), int(where * len(batches)))
    for epoch in epochs:
        order = batches.order(epoch)
        perm = np.random.default_rng((5, epoch)).permutation(m)
        for lo, hi in pairwise(np.asarray(batches._bounds).tolist()):
            assert order[lo:hi].tolist() == sorted(perm[lo:hi].tolist())


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled-if-available", "numpy"])
@settings(max_examples=60, deadline=None)
@given(
    setup=setups(),
    shape=st.sampled_from([(1,), (3,), (7,), (2, 5)]),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_each_batch_is_exactly_those_rows_of_x_and_y(compiled, setup, shape, dtype):
    m, b, policy, seed = setup
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, *shape)).astype(dtype)
    y = rng.integers(0, 10, m)
    batches = MiniBatches(X, y, batch_size=b, last_batch=policy, seed=seed)
    if not compiled:
        batches.rows._gather_rows = None  # np.take
    order = batches.order(1)
    bounds = np.cumsum([0, *batches.batch_sizes])
    for (lo, hi), (xb, yb) in zip(pairwise(bounds), batches.epoch(1), strict=True):
        assert xb.dtype == dtype and xb.shape == (hi - lo, *shape)
        np.testing.assert_array_equal(xb, X[order[lo:hi]])
        np.testing.assert_array_equal(yb, y[order[lo:hi]])


def regrouped_array(bounds: np.ndarray, at: int, b: int, m: int, last: str) -> np.ndarray:
    """Regrouping on an array of bounds, as MiniBatches did before its bounds became a Cut."""
    offset = int(bounds[at])
    left = m - offset
    if left and (left >= b or last != "drop"):
        rest = batch_bounds(left, min(b, left), last) + offset
        return np.concatenate([bounds[:at], rest])
    if left:
        return bounds[: at + 1]
    return bounds


@settings(max_examples=300, deadline=None)
@given(**REGROUPS)
def test_a_cut_holds_the_bounds_an_array_holds_through_any_regroups(m, first, moves, last):
    """A Cut keeps runs of equal batches, not one number per batch (10^9 rows at B=64 were a
    125 MB array): every bound, size and the whole array as before, after any regroups."""
    first = min(first, m)
    array, cut = batch_bounds(m, first, last), Cut.regular(m, first, last)
    for where, b in [(0.0, first), *moves]:
        at = int(where * (len(array) - 1))
        b = min(b, m)
        array, cut = regrouped_array(array, at, b, m, last), cut.regrouped(at, b, m, last)
        assert len(cut) == len(array)
        assert np.array_equal(np.asarray(cut), array)
        assert [cut[i] for i in range(-len(array), len(array))] == [*array.tolist()] * 2
        sizes = np.diff(array)
        if len(sizes):
            assert [cut.size_of(i) for i in range(len(sizes))] == sizes.tolist()
            assert (cut.smallest(), cut.largest()) == (sizes.min(), sizes.max())
        start = int(where * (len(array) - 1))  # a loop's walk from any batch on
        assert list(cut.spans(start)) == list(pairwise(array.tolist()))[start:]
    regular = np.array_equal(np.asarray(cut), batch_bounds(m, first, last))
    assert (cut == Cut.regular(m, first, last)) == regular  # MiniBatches.regular


@settings(max_examples=150, deadline=None)
@given(
    m=st.integers(1, 400),
    block_rows=st.integers(1, 50),
    buffer_blocks=st.integers(1, 6),
    b=st.integers(1, 120),
    start=st.floats(0, 1),
    epoch=st.integers(0, 3),
)
def test_walking_an_epochs_block_shuffle_gives_each_batchs_parts(
    m, block_rows, buffer_blocks, b, start, epoch
):
    """The streamed loop walks the batches (``BlockShuffle.walk``: the buffer in use is kept,
    not searched for): each batch's (buffer, positions) parts are the rows the epoch's order
    (``BlockShuffle.order``, computed whole) gives that batch, buffer by buffer."""
    layout = BlockLayout(m, block_rows, buffer_blocks)
    shuffle = BlockShuffle(layout, seed=3, epoch=epoch)
    cut = Cut.regular(m, min(b, m), "keep")
    first = int(start * (len(cut) - 1))
    order = shuffle.order(np.asarray(cut))
    walked = list(shuffle.walk(cut.spans(first)))
    assert len(walked) == len(cut) - 1 - first
    for i, parts in enumerate(walked, start=first):
        assert [j for j, _ in parts] == sorted({j for j, _ in parts})  # each buffer once, in turn
        rows = np.concatenate([shuffle.rows(j)[positions] for j, positions in parts])
        np.testing.assert_array_equal(rows, order[cut[i] : cut[i + 1]])
        for _, positions in parts:
            assert np.all(np.diff(positions) > 0)  # sorted: gathered in address order
