"""``new_request_id``: canonical UUID4 strings, never repeated across threads or a fork."""

from __future__ import annotations

import os
import threading
import uuid

import aioreqctx as context


def test_every_id_is_a_canonical_uuid4_and_none_repeats() -> None:
    ids = [context.new_request_id() for _ in range(10_000)]  # many batches
    assert len(set(ids)) == len(ids)
    for request_id in ids:
        parsed = uuid.UUID(request_id)
        assert str(parsed) == request_id
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_every_random_digit_varies() -> None:
    """No position of the template is left as it was (a slicing mistake would leave an 'x')."""
    ids = [context.new_request_id() for _ in range(2_000)]
    for position in range(36):
        seen = {request_id[position] for request_id in ids}
        if position in (8, 13, 18, 23):
            assert seen == {"-"}
        elif position == 14:
            assert seen == {"4"}
        elif position == 19:
            assert seen == set("89ab")
        else:
            assert seen == set("0123456789abcdef"), position


def test_threads_get_distinct_ids() -> None:
    made: list[list[str]] = [[] for _ in range(8)]

    def make(into: list[str]) -> None:
        into.extend(context.new_request_id() for _ in range(2_000))

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [request_id for into in made for request_id in into]
    assert len(set(everything)) == len(everything) == 16_000


def test_a_forked_child_never_hands_out_its_parents_ids() -> None:
    """A prefork server (gunicorn, Celery) forks after the parent made IDs: the IDs the parent
    had ready must not be made again in every child."""
    context.new_request_id()  # the parent now holds ready IDs
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        os.close(read_end)
        os.write(write_end, " ".join(context.new_request_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        in_child = set(pipe.read().split())
    os.waitpid(child, 0)
    in_parent = {context.new_request_id() for _ in range(50)}
    assert len(in_child) == 50
    assert not in_child & in_parent
