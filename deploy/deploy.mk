# Deployment targets; included by the top-level Makefile. See deploy/README.md.
#
#   make base-image        sage-base:bookworm from Debian packages (machines without a registry)
#   make images            sage-{activation,agent,scoring}:$(IMAGE_TAG) from deploy/docker/Dockerfile
#   make image-activation-cuda
#   make compose-up        the three services on this machine (host network, 127.0.0.1)
#   make compose-down
#   make test-deploy       offline checks of the Dockerfile, compose file and Kubernetes manifests
#   make test-e2e          builds the images and runs the stack in containers (needs a Docker engine)

DOCKER        ?= docker
IMAGE_TAG     ?= dev
BASE_IMAGE    ?= sage-base:bookworm
# Build containers reach PyPI through the host's network: machines here have no
# bridge network for Docker; elsewhere `default` works as well.
BUILD_NETWORK ?= host
DOCKER_CONTEXT_DIR := build/docker-context
COMPOSE_FILES ?= -f deploy/compose.yaml
COMPOSE       ?= $(shell $(DOCKER) compose version >/dev/null 2>&1 && echo "$(DOCKER) compose" || echo docker-compose)
SECRETS       := deploy/secrets

.PHONY: base-image docker-context images image-activation-cuda compose-secrets compose-up compose-down \
        compose-logs test-deploy test-e2e

base-image:
	deploy/base/build-base.sh $(BASE_IMAGE)

docker-context:
	deploy/docker/stage-context.sh $(DOCKER_CONTEXT_DIR)

images: docker-context
	@for target in activation agent scoring; do \
	    echo "== sage-$$target:$(IMAGE_TAG)"; \
	    start=$$(date +%s); \
	    $(DOCKER) build --network $(BUILD_NETWORK) --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	        -f $(DOCKER_CONTEXT_DIR)/deploy/docker/Dockerfile --target $$target \
	        -t sage-$$target:$(IMAGE_TAG) $(DOCKER_CONTEXT_DIR) || exit 1; \
	    echo "== sage-$$target:$(IMAGE_TAG) built in $$(( $$(date +%s) - start )) s"; \
	done

image-activation-cuda: docker-context
	$(DOCKER) build --network $(BUILD_NETWORK) --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	    -f $(DOCKER_CONTEXT_DIR)/deploy/docker/Dockerfile --target activation-cuda \
	    -t sage-activation-cuda:$(IMAGE_TAG) $(DOCKER_CONTEXT_DIR)

# Empty secret files (an empty file sets nothing), readable by the containers' uid
# 10001 through the bind mount; the folder itself is private.
compose-secrets:
	@chmod 0700 $(SECRETS)
	@for name in auth_tokens openai_api_key sage_token; do \
	    [ -e $(SECRETS)/$$name ] || install -m 0644 /dev/null $(SECRETS)/$$name; \
	done

compose-up: compose-secrets
	SAGE_IMAGE_TAG=$(IMAGE_TAG) $(COMPOSE) $(COMPOSE_FILES) -p sage up -d
	@echo "activation 127.0.0.1:50051, agent 127.0.0.1:50052, scoring 127.0.0.1:50053 (healthy once loaded:" \
	      "$(COMPOSE) $(COMPOSE_FILES) -p sage ps)"

compose-down:
	SAGE_IMAGE_TAG=$(IMAGE_TAG) $(COMPOSE) $(COMPOSE_FILES) -p sage down

compose-logs:
	SAGE_IMAGE_TAG=$(IMAGE_TAG) $(COMPOSE) $(COMPOSE_FILES) -p sage logs --tail 100

test-deploy: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/deploy

# SAGE_E2E=1 lets the tests build images and start containers; without it (as in
# `make test`) they skip. They skip too, saying why, when no Docker engine answers.
test-e2e: setup
	SAGE_E2E=1 SAGE_E2E_BASE_IMAGE=$(BASE_IMAGE) SAGE_E2E_BUILD_NETWORK=$(BUILD_NETWORK) \
	    $(PY) -m pytest -q -p no:cacheprovider tests/e2e
