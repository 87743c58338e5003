"""The background writer: overlaps writing with computing, one block in flight, errors surface."""

import threading

import pytest

from actstore.store.writer import BackgroundWriter


def test_writes_in_order_with_one_block_in_flight():
    release = threading.Event()
    written, in_flight = [], []

    def write(block, **arrays):
        in_flight.append(block)
        if block == 0:
            assert release.wait(5)
        written.append((block, arrays["x"]))

    with BackgroundWriter(write) as writer:
        writer.submit(0, {"x": "a"})  # returns while block 0 is still being written
        assert written == []
        release.set()
        writer.submit(1, {"x": "b"})  # waits for block 0 first
        assert written == [(0, "a")]
    assert written == [(0, "a"), (1, "b")] and in_flight == [0, 1]
    assert writer.busy_s > 0


def test_an_error_in_the_thread_is_raised_at_the_next_hand_over():
    def write(block, **arrays):
        if block == 1:
            raise OSError("disk full")

    writer = BackgroundWriter(write)
    writer.submit(0, {})
    writer.submit(1, {})
    with pytest.raises(OSError, match="disk full"):
        writer.submit(2, {})
    writer.__exit__(None, None, None)


def test_an_error_in_the_last_block_is_raised_on_close():
    def write(block, **arrays):
        raise ValueError(f"refused block {block}")

    with pytest.raises(ValueError, match="refused block 0"):
        with BackgroundWriter(write) as writer:
            writer.submit(0, {})
