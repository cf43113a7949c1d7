# Quick start: `make demo` (install, then train on 4 ranks) and `make test`.
# Every target creates its own virtualenv in .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test

.PHONY: test demo bench install clean lab-deps

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# netlab (the simulated multi-host lab) needs iproute2, iptables and ethtool; install them when
# we are root and they are missing. Without root the netlab tests skip themselves.
lab-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	   ! (command -v ip && command -v iptables && command -v ethtool) >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iptables ethtool procps >/dev/null) \
	  || echo "lab-deps: could not install netlab's tools; netlab tests will skip"; \
	fi

test: $(STAMP) lab-deps
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/ringrun -n 4 examples/train.py

bench: $(STAMP)
	$(VENV)/bin/ringrun -n 4 -m benchmarks.collectives --op all

clean:
	rm -rf $(VENV) .pytest_cache
