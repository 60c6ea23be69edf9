"""Packing racks into PowerLimitSlices (core/slices.py): whole racks, at most the slice size, in
power-tree order, each rack kept in its slice while it fits."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stargate_operator.core.slices import pack, slice_name

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

racks_st = st.lists(st.integers(0, 40), max_size=40).map(lambda ns: [(f"r{i}", n) for i, n in enumerate(ns)])


def loads(racks: list[tuple[str, int]], out: dict[str, str]) -> dict[str, list[int]]:
    by: dict[str, list[int]] = {}
    for name, nodes in racks:
        by.setdefault(out[name], []).append(nodes)
    return by


def check_sizes(racks: list[tuple[str, int]], out: dict[str, str], size: int) -> None:
    assert set(out) == {name for name, _ in racks}  # every rack, once: never split
    for members in loads(racks, out).values():
        assert sum(members) <= size or len(members) == 1, (members, size)


@PROPS
@given(racks_st, st.integers(1, 60))
def test_fresh_packing_is_contiguous_in_tree_order_and_bounded(racks: list[tuple[str, int]],
                                                               size: int) -> None:
    out = pack(racks, {}, size)
    check_sizes(racks, out, size)
    # in power-tree order: each slice is a run of consecutive racks, and the slices follow each other
    seen: list[str] = []
    for name, _ in racks:
        if not seen or seen[-1] != out[name]:
            assert out[name] not in seen
            seen.append(out[name])
    assert seen == [slice_name(i) for i in range(len(seen))]
    # next-fit: at most twice the slices that the nodes need, plus one
    total = sum(n for _, n in racks)
    assert len(seen) <= 2 * -(-total // size) + 1 or not racks


@PROPS
@given(racks_st, st.integers(1, 60), st.data())
def test_racks_keep_their_slices_when_others_come_and_go(racks: list[tuple[str, int]], size: int,
                                                         data: st.DataObject) -> None:
    first = pack(racks, {}, size)
    assert pack(racks, first, size) == first  # a recomputation moves nothing
    # some racks leave, new ones arrive anywhere in the order (a new hall, a new row)
    kept = [r for r in racks if data.draw(st.booleans())]
    new = [(f"new{i}", data.draw(st.integers(0, 40))) for i in range(data.draw(st.integers(0, 5)))]
    mixed = list(kept)
    for r in new:
        mixed.insert(data.draw(st.integers(0, len(mixed))), r)
    again = pack(mixed, first, size)
    check_sizes(mixed, again, size)
    for name, _ in kept:
        assert again[name] == first[name]
    assert pack(mixed, again, size) == again


@PROPS
@given(racks_st, st.integers(1, 60), st.data())
def test_a_grown_rack_moves_only_when_it_no_longer_fits(racks: list[tuple[str, int]], size: int,
                                                       data: st.DataObject) -> None:
    first = pack(racks, {}, size)
    grown = [(name, nodes + data.draw(st.integers(0, 20))) for name, nodes in racks]
    again = pack(grown, first, size)
    check_sizes(grown, again, size)
    for members in loads(grown, again).values():
        assert sum(members) <= size or len(members) == 1
    # a slice that still holds all of its racks keeps every one of them
    for slice_, names in {s: [n for n, _ in racks if first[n] == s] for s in set(first.values())}.items():
        if sum(dict(grown)[n] for n in names) <= size:
            assert all(again[n] == slice_ for n in names)


def test_a_rack_larger_than_a_slice_has_one_of_its_own() -> None:
    out = pack([("a", 3), ("big", 12), ("b", 3)], {}, 10)
    assert out == {"a": "limits-0", "big": "limits-1", "b": "limits-2"}
    assert pack([("a", 3), ("big", 12), ("b", 3)], out, 10) == out
