# Each target sets up what it needs: a fresh clone only needs `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $$HOME/.pyenv)
SOURCES := aioreqctx tests examples bench conftest.py noxfile.py

.PHONY: lock demo serve test lint typecheck pytest test-all test-latest test-compat docs docs-serve bench bench-http bench-floors bench-layouts old-layout redis-server postgresql chromium wrk clean FORCE

# The dev/CI set is locked (every package, exact version and hash) in $(LOCK) by uv, which
# also installs it: `make lock` refreshes the lock after a change to pyproject.toml.
LOCK := requirements/dev.txt
UV_VERSION := 0.13.9
UV = $(VENV)/bin/uv

# Issue 18's flat layout, before the move to folders, for bench/layouts.py (bench-layouts below).
OLD_LAYOUT ?= 1f1ed29
OLD_LAYOUT_DIR = $(VENV)-old-layout
OLD_PYTHON = $(OLD_LAYOUT_DIR)/venv/bin/python

$(VENV)/.installed: $(LOCK) pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip sync --quiet --python $(VENV)/bin/python --require-hashes $(LOCK)
	$(UV) pip install --quiet --python $(VENV)/bin/python --no-deps -e .
	touch $@

lock:
	test -x .venv-lock/bin/uv || { $(PYTHON) -m venv .venv-lock && \
	  .venv-lock/bin/python -m pip install --quiet uv==$(UV_VERSION); }
	.venv-lock/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	  --generate-hashes --quiet --upgrade -o $(LOCK)

# The demo's job scenario needs redis-server; without it the demo says so and runs the rest.
demo: $(VENV)/.installed
	-@$(MAKE) --no-print-directory redis-server
	$(VENV)/bin/python examples/demo.py

# The demo's gateway on http://127.0.0.1:8080 (its backend on 8081) for trying with curl.
serve: $(VENV)/.installed
	$(VENV)/bin/python examples/services.py serve --port 8080

test: lint typecheck pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy --strict $(SOURCES)

pytest: $(VENV)/.installed old-layout redis-server postgresql chromium wrk
	$(VENV)/bin/pytest

# pytest on every CPython 3.11+ that pyenv has, each in its own .venv-<version>; SKIP_VERSION
# names one already run (CI: the one `make test` used).
test-all:
	@found=0; for dir in $(PYENV_ROOT)/versions/*; do \
	  py=$$dir/bin/python; \
	  [ -x $$py ] && $$py -c 'import sys; sys.exit(sys.version_info < (3, 11) or hasattr(sys, "pypy_version_info"))' 2>/dev/null || continue; \
	  found=1; version=$$(basename $$dir); \
	  [ "$$version" = "$(SKIP_VERSION)" ] && { echo "=== Python $$version: run already ==="; continue; }; \
	  echo "=== Python $$version ==="; \
	  $(MAKE) --no-print-directory pytest PYTHON=$$py VENV=.venv-$$version || exit 1; \
	done; [ $$found = 1 ] || { echo "no Python 3.11+ under $(PYENV_ROOT)/versions"; exit 1; }

# The whole suite on Python 3.13 against the newest versions pyproject's ranges allow, not the
# lock: an upstream release that breaks users fails here at the next landing. The dev extra's
# caps (one redis-py for arq, taskiq-redis and kombu) still apply.
PYTHON_LATEST = $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/3.13.*/bin/python)))
test-latest: $(VENV)/.installed redis-server postgresql
	@test -n "$(PYTHON_LATEST)" || { echo "test-latest: no Python 3.13 under $(PYENV_ROOT)/versions"; exit 1; }
	rm -rf .venv-latest
	$(UV) venv --quiet --python $(PYTHON_LATEST) .venv-latest
	$(UV) pip install --quiet --python .venv-latest/bin/python --resolution highest -e '.[dev]'
	.venv-latest/bin/pytest -p no:cacheprovider

# Each integration's tests against the lowest and the newest version of its range (noxfile.py,
# uv venvs under .nox), then docs/versions.md checked against what the sessions installed.
# pyenv's interpreters go on PATH for nox to find 3.11 and 3.13.
test-compat: $(VENV)/.installed redis-server postgresql
	rm -rf .nox/versions
	PATH="$$(printf '%s:' $(PYENV_ROOT)/versions/3.1[1-9]*/bin)$$PATH" UV=$(abspath $(UV)) \
	  $(VENV)/bin/nox --no-color

# The docs site (MkDocs, Material, mkdocstrings): any warning, broken link or reference fails.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict --dev-addr 127.0.0.1:8000

# One benchmark after the other, never in parallel (even under make -j): they share the cores.
bench: $(VENV)/.installed
	$(VENV)/bin/python bench/tasks.py
	$(MAKE) --no-print-directory bench-http

# Programs from Debian's packages, installed on first use with apt-get (sudo unless root):
# $(call debian-package,PACKAGE,WHAT NEEDS IT,ELSE[,PROBE]) runs ELSE after one line where there
# is no apt-get; PROBE (default: the command PACKAGE on PATH) tells whether it is there.
# redis-server (the job tests, the docs' job examples, the demo's job scenario) and postgresql
# (the asyncpg tests; they start their own server) and chromium (the in-flight page, read
# headless): without them those tests skip, each saying how to install it (CI fails instead);
# wrk: bench/http_middleware.py and its smoke tests (skipped without it); valgrind: bench/floors.py.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
define debian-package
@$(or $(4),command -v $(1)) >/dev/null 2>&1 || if command -v apt-get >/dev/null; then \
  echo "installing $(1) from Debian's packages (apt-get install $(1)) for $(2)"; \
  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(1) >/dev/null; \
else echo "no apt-get here: install $(1) with your package manager for $(2)"; $(3); fi
endef

redis-server:
	$(call debian-package,redis-server,the job tests and the demo's job scenario,true)

postgresql:
	$(call debian-package,postgresql,the asyncpg tests,true,ls /usr/lib/postgresql/*/bin/initdb)

chromium:
	$(call debian-package,chromium,the in-flight page test (headless),true)

wrk:
	$(call debian-package,wrk,bench/http_middleware.py and its smoke tests,true)

# The peers it measures are in the locked dev set (the bench extra).
bench-http: $(VENV)/.installed
	$(call debian-package,wrk,bench/http_middleware.py,exit 1)
	$(VENV)/bin/python bench/http_middleware.py --together

# Issue 18: the flat layout before the move to folders (OLD_LAYOUT, git archive'd into
# $(OLD_LAYOUT_DIR)/src) installed NOT editable, with the locked dev set, in a venv of its own
# on $(VENV)'s Python, beside $(VENV): bench/layouts.py runs it side by side with this checkout.
# The .commit file changes only when OLD_LAYOUT (set at the top) does, which rebuilds the rest.
$(OLD_LAYOUT_DIR)/.commit: FORCE
	@mkdir -p $(@D)
	@git rev-parse --short $(OLD_LAYOUT)^{commit} | cmp -s - $@ || \
	  git rev-parse --short $(OLD_LAYOUT)^{commit} > $@

$(OLD_LAYOUT_DIR)/.installed: $(OLD_LAYOUT_DIR)/.commit $(VENV)/.installed
	rm -rf $(OLD_LAYOUT_DIR)/src $(OLD_LAYOUT_DIR)/venv
	mkdir -p $(OLD_LAYOUT_DIR)/src
	git archive $$(cat $<) | tar -x -C $(OLD_LAYOUT_DIR)/src
	$(UV) venv --quiet --python $(VENV)/bin/python $(OLD_LAYOUT_DIR)/venv
	$(UV) pip sync --quiet --python $(OLD_PYTHON) --require-hashes $(LOCK)
	$(UV) pip install --quiet --python $(OLD_PYTHON) --no-deps ./$(OLD_LAYOUT_DIR)/src
	touch $@

# For bench/layouts.py's smoke test: a clone without OLD_LAYOUT's commit (a shallow one) says so
# in one line and goes on; that test then skips, naming the target to build.
old-layout: $(VENV)/.installed
	@if git cat-file -e $(OLD_LAYOUT)^{commit} 2>/dev/null; then \
	  $(MAKE) --no-print-directory $(OLD_LAYOUT_DIR)/.installed; \
	else echo "old-layout: commit $(OLD_LAYOUT) is not in this clone (shallow?); not built"; fi

# Issue 18's check: no regression on the request path and the factories, both layouts in one run.
bench-layouts: $(VENV)/.installed $(OLD_LAYOUT_DIR)/.installed
	$(call debian-package,wrk,bench/layouts.py,exit 1)
	$(VENV)/bin/python bench/layouts.py

FORCE:

# Instruction counts under valgrind's callgrind: the floors behind bench/tasks.py's ratios.
bench-floors: $(VENV)/.installed
	$(call debian-package,valgrind,bench/floors.py,exit 1)
	$(VENV)/bin/python bench/floors.py

clean:
	rm -rf .venv .venv-* .nox .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info site dist build
