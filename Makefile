# Two commands on a fresh machine: `make demo` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo check test postgres browser bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	BATON_DB=sqlite:///baton-demo.db $(VENV)/bin/baton demo

# Starts the local PostgreSQL cluster when it is installed and down; the
# PostgreSQL tests then run against a database of their own.
postgres:
	@if command -v pg_lsclusters >/dev/null 2>&1; then \
	  pg_lsclusters --no-header | while read ver name port status rest; do \
	    if [ "$$status" != "online" ]; then \
	      echo "starting PostgreSQL $$ver/$$name"; \
	      pg_ctlcluster --skip-systemctl-redirect $$ver $$name start || pg_ctlcluster $$ver $$name start; \
	    fi; \
	  done; \
	else echo "PostgreSQL is not installed here: its tests will be skipped (loudly)"; fi

# The web console's tests drive Debian's Chromium (Playwright never downloads one).
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium for the web console tests"; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Lint (ruff) and strict types (mypy) over the packages; configured in pyproject.toml.
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: $(STAMP) postgres browser check
	$(PY) -m pytest -q -n 2

bench: $(STAMP) browser
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/store.py
	$(PY) bench/engine.py
	$(PY) bench/api.py
	$(PY) bench/scheduler.py
	$(PY) bench/web.py

clean:
	rm -rf $(VENV) baton-demo.db*
