"""Runs one docs block that serves: ``web.run_app`` on 127.0.0.1 with a port the test reads.

``python tests/support/docs_runner.py BLOCK.py PORT_FILE``: the block runs as ``__main__``; its
``web.run_app(app, ...)`` serves on a socket bound here (the block's host and port are
replaced), with no banner, until SIGINT, and the port is written to PORT_FILE first.
"""

from __future__ import annotations

import runpy
import socket
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

served_by_block = web.run_app


def run_app_on_a_free_port(app: Any, **options: Any) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    for replaced in ("host", "port", "path", "print"):
        options.pop(replaced, None)
    Path(sys.argv[2]).write_text(str(listener.getsockname()[1]))
    served_by_block(app, sock=listener, print=None, **options)


if __name__ == "__main__":
    web.run_app = run_app_on_a_free_port
    runpy.run_path(sys.argv[1], run_name="__main__")
