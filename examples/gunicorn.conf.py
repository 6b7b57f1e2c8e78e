"""gunicorn settings for examples/gunicorn_app.py: two aiohttp workers on 127.0.0.1.

``GUNICORN_BIND`` overrides the address (``127.0.0.1:0`` picks a free port; gunicorn logs it).
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = 2
worker_class = "aiohttp.GunicornWebWorker"
graceful_timeout = 10  # seconds a worker gets to finish its requests after SIGTERM
accesslog = None
