# Quick start: `make demo` (install, then train on 4 ranks) and `make test`.
# Every target creates its own virtualenv in .venv and installs what it needs; `make test`
# installs the torch extra too (torch==2.13.0 CPU), so the torch backend is tested.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test

.PHONY: test demo demo-torch bench bench-torch bench-groups install clean lab-deps

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,torch]'
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

# The same digits, a small torch CNN, torch DDP over the "ringrt" backend.
demo-torch: $(STAMP)
	$(VENV)/bin/ringrun -n 4 examples/torch_train.py

# make bench: every collective, ringrt against torch gloo and Open MPI (shared memory and TCP)
# at worlds 2 and 4, merged into benchmarks/results/collectives.{json,png}, then issue 5's
# all_reduce targets (benchmarks/results/targets.json); about 10 minutes on 2 cores. It installs
# the compare extras when it can (Open MPI with apt when root; torch==2.13.0, mpi4py and
# matplotlib with pip); without them it runs what it can and says what it skipped.
BENCH_STAMP := $(VENV)/.installed-compare

$(BENCH_STAMP): $(STAMP)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v mpirun >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null) \
	  || echo "bench: could not install Open MPI; MPI will be skipped"; \
	fi
	@if $(PY) -m pip install --quiet -e '.[compare]'; then touch $@; else \
	  echo "bench: could not install every compare extra; trying them one by one"; \
	  for pkg in 'torch==2.13.0' matplotlib mpi4py; do \
	    $(PY) -m pip install --quiet "$$pkg" || echo "bench: $$pkg not installed; skipping its part"; \
	  done; \
	fi

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.compare --worlds 2,4 --op all \
	  --out benchmarks/results/collectives.json --plot benchmarks/results/collectives.png
	$(PY) -m benchmarks.compare --worlds 2,4 --targets benchmarks/results/targets.json
	$(PY) -m benchmarks.report

clean:
	rm -rf $(VENV) .pytest_cache

# make bench-torch: torch's collectives and a torch DDP training step, "ringrt" backend vs gloo
# interleaved in the same jobs, at worlds 1, 2 and 4 (about 5 minutes on 2 cores); results in
# benchmarks/results/torch_*.json. Larger worlds: BENCH_TORCH_WORLDS="1 2 4 8 16".
BENCH_TORCH_WORLDS ?= 1 2 4

bench-torch: $(STAMP)
	for n in $(BENCH_TORCH_WORLDS); do \
	  $(VENV)/bin/ringrun -n $$n -m benchmarks.torch_train_step \
	    --json benchmarks/results/torch_train_step.json || exit 1; \
	  if [ $$n -gt 1 ]; then $(VENV)/bin/ringrun -n $$n -m benchmarks.torch_collectives \
	    --json benchmarks/results/torch_collectives.json || exit 1; fi; \
	done

# make bench-groups: a group of every rank against the world group, interleaved in one job,
# NumPy API and torch backend at worlds 2 and 4 (about 8 minutes on 2 cores; docs/groups.md);
# results in benchmarks/results/groups-{numpy,torch}-w{2,4}.json.
bench-groups: $(STAMP)
	for api in numpy torch; do for n in 2 4; do \
	  $(VENV)/bin/ringrun -n $$n -m benchmarks.groups --api $$api --budget 0.5 \
	    --json benchmarks/results/groups-$$api-w$$n.json || exit 1; \
	done; done
