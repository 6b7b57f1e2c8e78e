"""The private redis-server fixture answers on 127.0.0.1 and keeps data in its own directory."""

from __future__ import annotations

from .redis_server import RedisServer


def test_the_private_redis_server_stores_and_flushes(redis_server: RedisServer) -> None:
    assert redis_server.host == "127.0.0.1"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.command("SET", "probe", "1").startswith(b"+OK")
    assert redis_server.command("GET", "probe") == b"$1\r\n1\r\n"
    redis_server.flushall()
    assert redis_server.command("GET", "probe") == b"$-1\r\n"
    assert redis_server.directory.is_dir()
