"""order.DueIndex: the in-memory claim order of SPEC section 6."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from queuectl.core.order import DueIndex, lane_of, window_for

NOW = 1_000_000.0


def drain(index: DueIndex, now: float = NOW) -> list[str]:
    names = []
    while (due := index.pop_due(now)) is not None:
        names.append(due[1])
    return names


def test_priority_then_due_time_then_name():
    index = DueIndex()
    for name, priority, due in [("c", 0, NOW - 5), ("b", 0, NOW - 5), ("late", 0, NOW - 1),
                                ("early", 0, NOW - 9), ("urgent", 7, NOW), ("low", -3, NOW - 99)]:
        index.add("pending", name, priority, due, NOW)

    assert drain(index) == ["urgent", "early", "b", "c", "late", "low"]
    assert len(index) == 0


def test_a_scheduled_job_waits_for_its_time():
    index = DueIndex()
    index.add("failed", "retry", 5, NOW + 10, NOW)
    index.add("pending", "ready", 0, NOW, NOW)

    assert index.pop_due(NOW) == ("pending", "ready")
    assert index.pop_due(NOW) is None
    assert index.next_due() == NOW + 10
    assert index.pop_due(NOW + 10) == ("failed", "retry")
    assert index.next_due() is None


def test_a_changed_job_is_ordered_by_its_new_key_once():
    index = DueIndex()
    index.add("pending", "job", 0, NOW + 60, NOW)
    index.add("pending", "other", 1, NOW - 1, NOW)
    index.add("failed", "job", 9, NOW - 1, NOW)
    index.add("failed", "job", 9, NOW - 1, NOW)

    assert index.next_due() is None  # the stale scheduled entry is skipped
    assert drain(index, NOW + 120) == ["job", "other"]


def test_discard_forgets_a_job_but_only_in_the_named_folder():
    index = DueIndex()
    index.add("failed", "moved", 0, NOW, NOW)
    index.add("pending", "gone", 0, NOW, NOW)

    index.discard("moved", "pending")  # a late event about the folder it left
    index.discard("gone")

    assert "moved" in index and "gone" not in index
    assert index.ids() == {"moved"}
    assert drain(index) == ["moved"]


operations = st.lists(st.tuples(
    st.sampled_from(["add", "discard"]), st.sampled_from("abcdef"), st.sampled_from(["pending", "failed"]),
    st.integers(-2, 2), st.integers(-3, 3)), max_size=40)


@given(operations, st.integers(0, 4))
def test_matches_sorting_the_latest_key_of_each_job(ops, later):
    """Whatever adds and discards happened, the pops are the live due jobs in SPEC order (time only moves on)."""
    index = DueIndex()
    latest: dict[str, tuple[int, float, str]] = {}
    for op, name, state, priority, offset in ops:
        if op == "add":
            index.add(state, name, priority, NOW + offset, NOW)
            latest[name] = (-priority, NOW + offset, state)
        else:
            index.discard(name, state)
            if latest.get(name, (0, 0, None))[2] == state:
                del latest[name]
    now = NOW + later

    expected = sorted((key[0], key[1], name) for name, key in latest.items() if key[1] <= now)
    assert drain(index, now) == [name for _, _, name in expected]
    future = [key[1] for key in latest.values() if key[1] > now]
    assert index.next_due() == (min(future) if future else None)


def band(count: int) -> DueIndex:
    index = DueIndex()
    for number in range(count):
        index.add("pending", f"job-{number:03d}", 0, NOW - 100 + number, NOW)
    return index


def test_a_worker_of_several_takes_the_first_job_of_its_own_lane():
    lanes = 4
    picks = [band(40).pop_due(NOW, lane, lanes, window=16)[1] for lane in range(lanes)]
    for lane, job_id in enumerate(picks):
        assert lane_of(job_id, lanes) == lane
        earlier = [f"job-{number:03d}" for number in range(int(job_id[-3:]))]
        assert all(lane_of(other, lanes) != lane for other in earlier)  # the first one of its lane
    assert len(set(picks)) == lanes


def test_with_none_of_its_lane_in_the_window_a_worker_takes_one_of_the_others_spread_by_lane():
    lanes = 3
    foreign = [f"f{number}" for number in range(200) if lane_of(f"f{number}", lanes) == 1][:5]
    index = DueIndex()
    for position, job_id in enumerate(foreign):
        index.add("pending", job_id, 0, NOW - 10 + position, NOW)
    assert index.pop_due(NOW, 0, lanes, window=5) == ("pending", foreign[0])
    assert index.pop_due(NOW, 2, lanes, window=4) == ("pending", foreign[1 + 2])  # its lane-th of the rest
    assert index.pop_due(NOW, 1, lanes, window=4) == ("pending", foreign[1])  # lane 1's own


def test_lanes_never_pass_over_a_higher_priority():
    index = band(20)
    index.add("pending", "urgent", 5, NOW, NOW)
    lanes = 4
    lane = next(lane for lane in range(lanes) if lane != lane_of("urgent", lanes))
    assert index.pop_due(NOW, lane, lanes, window=16) == ("pending", "urgent")


def test_one_lane_is_the_plain_order():
    index = band(5)
    assert index.pop_due(NOW, 0, 1, window=64) == ("pending", "job-000")
    assert window_for(1) == 1 and window_for(4) == 16
