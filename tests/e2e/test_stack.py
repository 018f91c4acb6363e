"""The stack in containers, end to end: the activation container serves the
embedded model, the agent container explains live features by probing it, the
scoring container scores an explanation, token auth and the metrics endpoint
work as the deployment manifests assume, and a SIGTERM stops each service
cleanly with the agent's database surviving on its volume."""

from __future__ import annotations

import urllib.request
from typing import Any

import grpc
import numpy as np
import pytest

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc
from sagex.sdk import ChannelConfig, Options, Sage, UnauthenticatedError
from tests.e2e.conftest import TARGETS, Stack, start_service, stop_service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # never part of `make test`; SAGE_E2E=1 runs them

FEATURES = 2
_explained: list[Any] = []  # explanations made by one test, read by the next


def _sage(stack: Stack, token: str | None = None) -> Sage:
    return Sage(activation=stack.address("activation"), agent=stack.address("agent"),
                scoring=stack.address("scoring"), config=ChannelConfig(token=token, max_retries=0))


def _live_features(stack: Stack) -> list[int]:
    """Features that fire on some but not most corpus windows, like `sage demo` picks."""
    with grpc.insecure_channel(stack.address("activation")) as channel:
        stats = pb_grpc.ActivationServiceStub(channel).GetFeatureStatistics(
            pb.GetFeatureStatisticsRequest(sae_id=EMBEDDED_SAE_ID), timeout=900, metadata=stack.metadata())
    window_freq = np.frombuffer(stats.window_frequency, "<f4")
    candidates = np.flatnonzero((window_freq > 0.002) & (window_freq < 0.2))
    assert len(candidates) >= FEATURES, "the embedded SAE should have live features"
    rng = np.random.default_rng(0)
    return sorted(int(f) for f in rng.choice(candidates, size=FEATURES, replace=False))


def test_images_run_as_non_root_and_expose_the_service_ports(docker_client: Any, images: dict[str, str]) -> None:
    ports = {"activation": 50051, "agent": 50052, "scoring": 50053}
    for target, tag in images.items():
        config = docker_client.images.get(tag).attrs["Config"]
        assert config["User"] == "10001:10001"
        assert set(config["ExposedPorts"]) == {f"{ports[target]}/tcp"}
        assert config["Entrypoint"] == ["sage-entrypoint"] and config["Cmd"][:2] == ["serve", target]


def test_activation_serves_the_embedded_model(stack: Stack) -> None:
    with _sage(stack, stack.token) as sage:
        info = sage.activation.model_info()
    assert EMBEDDED_SAE_ID in {sae.id for sae in info.saes}


def test_calls_without_the_token_are_refused(stack: Stack) -> None:
    with _sage(stack) as sage:
        for call in (sage.activation.model_info, lambda: sage.agent.get("explanations/none")):
            with pytest.raises(UnauthenticatedError):
                call()


def test_metrics_endpoint_serves_the_hpa_metric(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.metrics_ports['activation']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    assert "sagex_activation_queue_texts " in text  # the series the HPA scales on (deploy/k8s/activation-hpa.yaml)


def test_agent_explains_live_features_through_the_activation_container(stack: Stack) -> None:
    features = _live_features(stack)
    with _sage(stack, stack.token) as sage:
        job = sage.agent.explain_many(EMBEDDED_SAE_ID, features, Options(policy="heuristic"), concurrency=2)
        results = job.result(timeout=1200)
    assert [ex.feature_id for ex in results] == features
    for ex in results:
        assert not ex.failed, f"feature {ex.feature_id}: {ex.error}"
        assert ex.description
        assert ex.triage_class or ex.probes, "a live feature is either triaged or probed"
    _explained.extend(results)


def test_scoring_scores_an_explanation(stack: Stack) -> None:
    if not _explained:
        pytest.skip("needs the explanations of the previous test")
    ex = _explained[0]
    with _sage(stack, stack.token) as sage:
        (result,) = sage.scoring.score(EMBEDDED_SAE_ID, ex.feature_id, ex.description, ["embedding"])
    assert not result.error, result.error
    assert result.metrics


def test_sigterm_drains_and_the_database_survives_a_restart(stack: Stack) -> None:
    if not _explained:
        pytest.skip("needs the explanations of the previous test")
    assert stop_service(stack, "agent") == 0
    start_service(stack, "agent")  # same named volume, new container
    with _sage(stack, stack.token) as sage:
        again = sage.agent.get(_explained[0].name)
    assert again.description == _explained[0].description
    for service in reversed(TARGETS):
        assert stop_service(stack, service) == 0, f"{service} did not exit cleanly on SIGTERM"
