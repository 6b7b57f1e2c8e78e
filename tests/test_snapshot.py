"""Deep copies for copying children: shared references stay shared, uncopyable values are shared."""

from __future__ import annotations

import logging
import threading
from typing import Any, ClassVar

import pytest

from aioreqctx._core.snapshot import snapshot


class Database:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.name = "primary"


@pytest.mark.parametrize("order", ["repo first", "db first"])
def test_an_uncopyable_object_is_shared_under_every_key_that_refers_to_it(
    order: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Repo:  # a new type per run: the one-warning-per-type memory starts clean
        def __init__(self, db: Database) -> None:
            self.db = db

    class Db(Database):
        pass

    db = Db()
    repo = Repo(db)
    items = [("repo", repo), ("db", db)]
    mapping = dict(items if order == "repo first" else items[::-1])
    with caplog.at_level(logging.WARNING, logger="aioreqctx"):
        copied = snapshot(mapping)
    assert copied["db"] is db  # the original, never a half-built shell
    assert copied["db"].__dict__ == db.__dict__
    assert copied["repo"].db is copied["db"]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert f"of type {Db.__qualname__} " in warned  # whichever key comes first, it is reported
    assert f"of type {Repo.__qualname__} " in warned


def test_copyable_values_keep_their_shared_references_in_one_complete_copy() -> None:
    shared = ["x"]
    copied = snapshot({"a": shared, "b": {"inner": shared}, "c": "text"})
    assert copied["a"] is not shared
    assert copied["b"]["inner"] is copied["a"]
    assert copied["a"] == ["x"]


def test_a_failed_value_does_not_spoil_the_copies_of_the_others() -> None:
    db = Database()
    payload = {"rows": [1, 2]}
    copied = snapshot({"db": db, "payload": payload, "holder": [payload]})
    assert copied["db"] is db
    assert copied["payload"] == payload
    assert copied["payload"] is not payload
    assert copied["holder"][0] is copied["payload"]


class Probe:
    """A mutable value that notes the memo each deep copy of it is given."""

    memos: ClassVar[list[dict[int, Any]]] = []

    def __deepcopy__(self, memo: dict[int, Any]) -> Probe:
        Probe.memos.append(memo)
        return Probe()


def test_one_deep_copy_however_many_mutable_values_follow_a_big_one() -> None:
    """A 5,000-object value then 40 small ones: the copies share one memo, never a copy of it
    per value (which cost 40 x 5,000 table entries), and it holds each object once."""
    big = [[n] for n in range(5000)]
    mapping: dict[str, Any] = {"big": big, **{f"small-{n}": Probe() for n in range(40)}}
    Probe.memos = []
    copied = snapshot(mapping)
    (memo,) = {id(memo): memo for memo in Probe.memos}.values()
    assert len(Probe.memos) == 40
    assert sum(id(item) in memo for item in big) == 5000  # the big value's copies, once
    assert copied["big"] == big
    assert copied["big"][0] is not big[0]
    assert all(isinstance(copied[f"small-{n}"], Probe) for n in range(40))
