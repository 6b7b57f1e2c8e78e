"""Context managers that work with both ``with`` and ``async with``.

Opening a context or timing a block never awaits, so the async form only delegates; it exists
because ``async with`` is what reads naturally inside coroutines.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


class SyncOrAsync(ABC, Generic[T]):
    """Implement ``__enter__``/``__exit__``; ``async with`` comes for free."""

    __slots__ = ()

    @abstractmethod
    def __enter__(self) -> T: ...

    @abstractmethod
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def __aenter__(self) -> T:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)
