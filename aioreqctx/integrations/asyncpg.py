"""asyncpg queries counted, timed and tagged per request: install the ``asyncpg`` extra.

``QueryAccounting`` hooks asyncpg's own query logger (``Connection.add_query_logger``, asyncpg
0.29+) on each connection of a pool (``create_pool(init=accounting.init)``). asyncpg calls it
with ``loop.call_soon`` from the querying task, so it runs in the request's context: each query
feeds the request's usage (``db_queries``, ``db_queries_ms``, ``db_queries_slowest_ms``,
``db_queries_errors``, in ``RequestContext.usage``), and one slower than ``slow_ms`` is
logged (WARNING ``slow_query``) with the request's ID.

``create_pool(connection_class=accounting.connection_class)`` also tags each statement with
a comment naming its route (``/* route='/users/{id}' */``), or its job's name: constant per
route, so asyncpg's statement cache keeps reusing prepared statements, and PostgreSQL's log and
``pg_stat_activity`` say where a statement came from. The request's ID in the comment
(``request_id_comment=True``) makes every statement unique: no statement is reused, measured
3.5x slower per query. ``application_name=True`` sets it to the request's ID for each
checkout (``create_pool(setup=accounting.setup)``): one more round trip per checkout.

Only what goes through the connection's query methods is seen (asyncpg logs no
``PreparedStatement`` or cursor use). SQLAlchemy's asyncio engine runs everything as prepared
statements: ``listen_sqlalchemy(engine)`` accounts and tags its queries through its events.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any
from urllib.parse import quote

from .. import keys
from .._core.emit import SQL_LOGGER, event_sink
from .._core.store import Context, current_mapping
from .._core.usage import current_usage
from . import missing_extra

try:
    import asyncpg
except ImportError as error:
    raise missing_extra("asyncpg") from error

USAGE_NAME = "db_queries"
STATEMENT_LIMIT = 1000
"""Characters of a statement a ``slow_query`` line keeps."""


class QueryAccounting:
    """Per-request accounting of asyncpg queries; also a ``RequestObserver`` (it notes each
    request's route for the comments: ``aioreqctx.setup(app, observers=(accounting,))``).

    ``slow_ms``: queries at least this slow are logged on ``logger``; ``log_statement``: with
    their statement; ``log_args``: with their parameters (off: they may hold personal data).
    ``request_id_comment``: the request's ID in the comment too (defeats the statement cache);
    ``application_name``: ``setup`` sets it to the request's ID.
    """

    def __init__(
        self,
        *,
        slow_ms: float = 100.0,
        log_statement: bool = True,
        log_args: bool = False,
        request_id_comment: bool = False,
        application_name: bool = False,
        logger: logging.Logger | str | Any = SQL_LOGGER,
    ) -> None:
        if not (isinstance(slow_ms, int | float) and slow_ms >= 0):
            raise ValueError(f"slow_ms must be a number of milliseconds >= 0, not {slow_ms!r}")
        self.slow_ms = float(slow_ms)
        self.log_statement = log_statement
        self.log_args = log_args
        self.request_id_comment = request_id_comment
        self.application_name = application_name
        self._log = event_sink(logger)
        # What a pool runs on release (in the releasing request's context): not its query.
        self._reset_queries: set[str] = set()
        comment = self.comment
        self.connection_class: type[asyncpg.Connection] = type(
            "TaggedConnection", (TaggedConnection,), {"comment": staticmethod(comment)}
        )

    async def init(self, connection: asyncpg.Connection) -> None:
        """For ``create_pool(init=...)`` (or call it on a connection of your own)."""
        reset_query = connection.get_reset_query()
        if reset_query:
            self._reset_queries.add(reset_query)
        connection.add_query_logger(self.logged)

    async def setup(self, connection: Any) -> None:
        """For ``create_pool(setup=...)``: with ``application_name=True``, name the checked-out
        connection after the request (the pool's reset on release restores it)."""
        request_id = current_mapping.get({}).get(keys.REQUEST_ID)
        if self.application_name and request_id is not None:
            name = str(request_id)[:63]  # PostgreSQL keeps 63 bytes of it
            await connection.execute("SELECT set_config('application_name', $1, false)", name)

    def logged(self, record: Any) -> None:
        """asyncpg's query logger: ``record`` is its ``LoggedQuery``."""
        query = str(record.query)
        if any(query.endswith(reset) for reset in self._reset_queries):  # tagged or not
            return
        self.account(query, record.elapsed * 1000.0, record.args, record.exception)

    def account(
        self, query: str, elapsed_ms: float, args: Any, error: BaseException | None
    ) -> None:
        """One query of the current request: into its usage, and logged if slow."""
        failed = error is not None
        usage = current_usage()
        if usage is not None:
            usage.record(USAGE_NAME, elapsed_ms, error=failed)
        if elapsed_ms < self.slow_ms:
            return
        mapping = current_mapping.get({})
        fields: dict[str, Any] = {
            "request_id": mapping.get(keys.REQUEST_ID),
            "duration_ms": round(elapsed_ms, 3),
            "slow_ms": self.slow_ms,
        }
        if self.log_statement:
            fields["statement"] = query[:STATEMENT_LIMIT]
        if self.log_args:
            fields["args"] = repr(args)[:STATEMENT_LIMIT]
        if failed:
            fields["error"] = type(error).__name__
        self._log(logging.WARNING, "slow_query", fields)

    def listen_sqlalchemy(self, engine: Any, *, comments: bool = True) -> None:
        """Account the queries of a SQLAlchemy ``engine`` (an ``AsyncEngine`` or ``Engine``)
        through its cursor events, and with ``comments`` tag each statement with the route.

        SQLAlchemy's asyncpg dialect runs every statement as a ``PreparedStatement``, which
        asyncpg's query logger does not see; its ``before_cursor_execute`` event does, and may
        rewrite the statement, before SQLAlchemy's prepared-statement cache looks it up: the
        comment is constant per route, so each route's statements are prepared once per
        connection. Use the engine's own pool, not ``connection_class`` (that would tag twice).
        """
        from sqlalchemy import event  # noqa: PLC0415 - only SQLAlchemy users reach here
        from sqlalchemy.engine import Engine  # noqa: PLC0415

        sync_engine = getattr(engine, "sync_engine", engine)
        if not isinstance(sync_engine, Engine):
            raise TypeError(f"engine must be a SQLAlchemy Engine or AsyncEngine, not {engine!r}")
        starts = "aioreqctx.query_starts"  # a stack in Connection.info, as SQLAlchemy's recipe

        def before(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> Any:
            conn.info.setdefault(starts, []).append(perf_counter())
            return (self.comment(statement) if comments else statement), parameters

        def after(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            elapsed_ms = (perf_counter() - conn.info[starts].pop()) * 1000.0
            self.account(statement, elapsed_ms, parameters, None)

        def failed(context: Any) -> None:
            pending = None if context.connection is None else context.connection.info.get(starts)
            if pending and context.statement is not None:
                elapsed_ms = (perf_counter() - pending.pop()) * 1000.0
                error = context.original_exception
                self.account(context.statement, elapsed_ms, context.parameters, error)

        event.listen(sync_engine, "before_cursor_execute", before, retval=True)
        event.listen(sync_engine, "after_cursor_execute", after)
        event.listen(sync_engine, "handle_error", failed)

    def comment(self, query: str) -> str:
        """``query`` behind a comment naming the current route (or job), if any."""
        mapping = current_mapping.get(None)
        if mapping is None:
            return query
        route = mapping.get(keys.ROUTE) or mapping.get(keys.JOB_NAME)
        if route is None:
            return query
        # Quoted as sqlcommenter does: no '*/' (nor quote) can close the comment early.
        tag = f"route='{quote(str(route), safe='/{}:')}'"
        if self.request_id_comment:
            tag += f",request_id='{quote(str(mapping.get(keys.REQUEST_ID)), safe='')}'"
        return f"/* {tag} */ {query}"

    def request_started(self, request: Any, mapping: Context) -> None:
        from ..web.inflight import route_of  # noqa: PLC0415 - only a server reaches here

        mapping[keys.ROUTE] = route_of(request)

    def request_finished(self, request: Any, mapping: Context, *args: Any) -> None:
        pass


class TaggedConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg is untyped
    """An asyncpg connection whose query methods tag each statement with ``comment(query)``;
    use ``QueryAccounting(...).connection_class``, which supplies it."""

    @staticmethod
    def comment(query: str) -> str:
        return query

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await super().execute(self.comment(query), *args, **kwargs)

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> Any:
        return await super().executemany(self.comment(command), args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await super().fetch(self.comment(query), *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await super().fetchrow(self.comment(query), *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await super().fetchval(self.comment(query), *args, **kwargs)

    async def fetchmany(self, query: str, args: Any, **kwargs: Any) -> Any:
        return await super().fetchmany(self.comment(query), args, **kwargs)

    async def prepare(self, query: str, **kwargs: Any) -> Any:
        return await super().prepare(self.comment(query), **kwargs)

    def cursor(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return super().cursor(self.comment(query), *args, **kwargs)
