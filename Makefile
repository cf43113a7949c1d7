# Quick start: `make demo` (install, then train on 4 ranks) and `make test`.
# Every target creates its own virtualenv in .venv and installs what it needs; `make test`
# installs the torch extra too (torch==2.13.0 CPU), so the torch backend is tested.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test

.PHONY: test test-slow demo demo-torch bench bench-torch install clean lab-deps test-torch-suite fuzz soak-load docs docs-serve test-recipes dist bench-across-hosts bench-groups bench-groups-across-hosts env-docs

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml setup.py ringrt/_native/_fastpath.c
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

test: $(STAMP) lab-deps docs
	$(PY) -m pytest -q -m "not slow"

# make test-slow: the long tests that make test leaves out (-m slow: a variant whose ground a
# faster test in make test covers); CI (.ci/run) runs it after make test. About a minute.
test-slow: $(STAMP) lab-deps
	$(PY) -m pytest -q -m slow

# make docs: the site (mkdocs.yml, docs/) into site/, --strict: a broken link, anchor or API
# reference fails the build (about 10 s). make docs-serve: browse it on 127.0.0.1:8000.
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $@

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# make env-docs: docs/environment.md from the settings registry (ringrt/_settings.py);
# tests/unit/test_settings.py fails while the page and the registry disagree.
env-docs: $(STAMP)
	$(PY) -c "from ringrt._settings import markdown; print(markdown(), end='')" > $@.tmp
	mv $@.tmp docs/environment.md

docs-serve: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000

# make test-recipes: the launchers and frameworks people already use (Lightning, Ray Train,
# Accelerate, torchrun, srun, Kubernetes, mpirun), each training to gloo's parameters
# (tests/recipes, docs/recipes). They run in their own virtualenv, .venv-recipes, into which
# each test pip-installs its framework when missing (never into ringrt's dependencies), and
# skip when it cannot; Open MPI comes from apt when root. Slow: downloads and trains.
RECIPES_VENV := .venv-recipes
RECIPES_PY   := $(RECIPES_VENV)/bin/python
RECIPES_STAMP := $(RECIPES_VENV)/.installed

$(RECIPES_STAMP): pyproject.toml
	test -x $(RECIPES_PY) || $(PYTHON) -m venv $(RECIPES_VENV)
	$(RECIPES_PY) -m pip install --quiet --upgrade pip
	$(RECIPES_PY) -m pip install --quiet -e '.[test,torch]'
	touch $@

test-recipes: $(RECIPES_STAMP)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v mpirun >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin >/dev/null) \
	  || echo "test-recipes: could not install Open MPI; the mpirun recipe will skip"; \
	fi
	RINGRT_RECIPES=1 RINGRT_RECIPES_INSTALL=1 $(RECIPES_PY) -m pytest -q -p no:cacheprovider tests/recipes

demo: $(STAMP)
	$(VENV)/bin/ringrun -n 4 examples/train.py

# The same digits, a small torch CNN, torch DDP over the "ringrt" backend.
demo-torch: $(STAMP)
	$(VENV)/bin/ringrun -n 4 examples/torch_train.py

# make bench: every collective, ringrt against torch gloo and Open MPI (shared memory and TCP)
# at worlds 2 and 4, merged into benchmarks/results/collectives.{json,png}, then the
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
	$(PY) -m benchmarks.collectives.compare --worlds 2,4 --op all \
	  --out benchmarks/results/collectives.json --plot benchmarks/results/collectives.png
	$(PY) -m benchmarks.collectives.compare --worlds 2,4 --targets benchmarks/results/targets.json
	$(PY) -m benchmarks.collectives.report

clean:
	rm -rf $(VENV) $(RECIPES_VENV) .pytest_cache site

# make bench-torch: torch's collectives and a torch DDP training step, "ringrt" backend vs gloo
# interleaved in the same jobs, at worlds 1, 2 and 4 (about 5 minutes on 2 cores); results in
# benchmarks/results/torch_*.json. Larger worlds: BENCH_TORCH_WORLDS="1 2 4 8 16".
BENCH_TORCH_WORLDS ?= 1 2 4

bench-torch: $(STAMP)
	for n in $(BENCH_TORCH_WORLDS); do \
	  $(VENV)/bin/ringrun -n $$n -m benchmarks.torch.train_step \
	    --json benchmarks/results/torch_train_step.json || exit 1; \
	  if [ $$n -gt 1 ]; then $(VENV)/bin/ringrun -n $$n -m benchmarks.torch.collectives \
	    --json benchmarks/results/torch_collectives.json || exit 1; fi; \
	done

# make test-torch-suite: PyTorch's own TestDistBackendWithSpawn (torch.testing._internal.
# distributed.distributed_test) on gloo and on ringrt at worlds 2 and 4, with BACKEND,
# WORLD_SIZE and TEMP_DIR set as torch's CI sets them (tests/torch/suite.py); fails when a
# test that passes on gloo does not pass on ringrt. Spawned ranks import the suite, 10-20 s a
# test on a loaded 2-core machine (over an hour a run); SUITE_START=fork takes ~5 minutes a run.
SUITE_STAMP  := $(VENV)/.installed-torch-suite
SUITE_DIR    ?= build/torch-suite
SUITE_WORLDS ?= 2 4
SUITE_START  ?= spawn

$(SUITE_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,torch-suite]'
	touch $@

test-torch-suite: $(SUITE_STAMP)
	mkdir -p $(SUITE_DIR)
	for n in $(SUITE_WORLDS); do for b in gloo ringrt; do \
	  tmp=$$(mktemp -d) && \
	  BACKEND=$$b WORLD_SIZE=$$n TEMP_DIR=$$tmp RINGRT_SUITE_START=$(SUITE_START) \
	    $(PY) -m tests.torch.suite --out $(SUITE_DIR)/$$b-$$n.json > $(SUITE_DIR)/$$b-$$n.log 2>&1; \
	  rc=$$?; rm -rf $$tmp; [ $$rc = 0 ] || { tail -30 $(SUITE_DIR)/$$b-$$n.log; exit 1; }; \
	done; done
	status=0; for n in $(SUITE_WORLDS); do \
	  $(PY) -m tests.torch.suite --compare $(SUITE_DIR)/gloo-$$n.json $(SUITE_DIR)/ringrt-$$n.json \
	    || status=1; \
	done; exit $$status

# make fuzz: the property-based fuzz tests of every decoder that reads bytes from outside the
# process (tests/fuzz), with FUZZ_EXAMPLES examples per test instead of make test's 200; the
# inputs tried per parser go to benchmarks/results/fuzz_counts.json (docs/reliability.md).
FUZZ_EXAMPLES ?= 20000

fuzz: $(STAMP)
	RINGRT_FUZZ=long RINGRT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
	  RINGRT_FUZZ_COUNTS=benchmarks/results/fuzz_counts.json \
	  $(PY) -m pytest -q -p no:cacheprovider -o timeout=0 tests/fuzz

# make soak-load: load held: SOAK_OPS ops of every kind (NumPy API, then the torch
# backend; 256 B and 256 KiB messages) on 2 ranks, sampling RSS, descriptors, threads and
# /dev/shm; prints each kind's figures and fails unless all stay flat (about 15 minutes on
# 2 cores); the record goes to benchmarks/results/soak_load.json (docs/reliability.md).
SOAK_OPS ?= 100000

soak-load: $(STAMP)
	$(VENV)/bin/ringrun -n 2 -m benchmarks.robustness.soak_load --ops $(SOAK_OPS) \
	  --json benchmarks/results/soak_load.json
	$(VENV)/bin/ringrun -n 2 -m benchmarks.robustness.soak_load --ops $(SOAK_OPS) --api torch \
	  --json benchmarks/results/soak_load.json

# make dist: the sdist and the wheel under dist/ (python -m build; see docs/packaging.md).
dist: $(STAMP)
	$(PY) -m build --outdir dist .

# make chaos: the chaos soak (docs/chaos.md): elastic training on 4 netlab hosts under a
# seeded schedule of faults, invariants checked after each round; needs root.
CHAOS_MINUTES ?= 30
CHAOS_SEED    ?= 1
.PHONY: chaos chaos-round flake-hunt
chaos: $(STAMP) lab-deps
	$(PY) -m benchmarks.robustness.chaos --minutes $(CHAOS_MINUTES) --seed $(CHAOS_SEED)

# make flake-hunt: the whole suite FLAKE_RUNS times, cycling plain / shuffled order / under
# CPU load (two busy processes), counting the tests that failed in each run (about 8-12
# minutes a run on 2 cores; the record: see the module's docstring).
FLAKE_RUNS ?= 20
flake-hunt: $(STAMP) lab-deps
	$(PY) -m benchmarks.robustness.flake_hunt --runs $(FLAKE_RUNS)

# make chaos-round: the soak's round test (tests/netlab/test_chaos.py: one seeded round, three
# faults at once, a slow checkpoint disk among them) alone; make test runs it too (it skips
# where netlab cannot run).
chaos-round: $(STAMP) lab-deps
	$(PY) -m pytest -q tests/netlab/test_chaos.py

# make bench-across-hosts: time to a validation loss on netlab (3 hosts, profiles
# gige and wifi): one process, torch DDP (plain, bf16, PowerSGD) and DiLoCo (H = 10, 50, 200)
# on examples/torch_train.py --task chars; about 15 minutes on 2 cores.
# Record: benchmarks/results/time_to_accuracy.json; guide: docs/training-across-laptops.md.
bench-across-hosts: $(STAMP) lab-deps
	$(PY) -m benchmarks.training.time_to_accuracy

# make bench-groups: a group of every rank against the world group, interleaved in one job,
# NumPy API and torch backend at worlds 2 and 4 (about 8 minutes on 2 cores; docs/groups.md);
# results in benchmarks/results/groups-{numpy,torch}-w{2,4}.json.
bench-groups: $(STAMP)
	for api in numpy torch; do for n in 2 4; do \
	  $(VENV)/bin/ringrun -n $$n -m benchmarks.collectives.groups --api $$api --budget 0.5 \
	    --json benchmarks/results/groups-$$api-w$$n.json || exit 1; \
	done; done

# make bench-groups-across-hosts: the same on netlab, 2 hosts x 2 ranks (gige), a group of
# every rank spanning both hosts against the world (about 1 minute; needs root; docs/groups.md).
bench-groups-across-hosts: $(STAMP) lab-deps
	$(PY) -m benchmarks.collectives.groups_across_hosts \
	  --json benchmarks/results/groups-netlab-2x2.json
