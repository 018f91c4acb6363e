"""Health (NOT_SERVING until loaded), reflection, request ids, deadlines, cancellation."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.activation.server import SERVICE_NAME, activation_service
from sagex.activation.servicer import ActivationServicer
from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc
from sagex.server.lifecycle import LIVENESS, start_server

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_not_serving_and_unavailable_until_loaded(activation_config, runtime) -> None:  # type: ignore[no-untyped-def]
    servicer = ActivationServicer(activation_config)
    running = await start_server([activation_service(servicer)], activation_config.server)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = lambda name: health.Check(health_pb2.HealthCheckRequest(service=name))  # noqa: E731
            # Readiness, the whole server ("") and the service alike, waits for the model;
            # liveness (the health service's own name) is SERVING once the port is bound.
            assert (await check("")).status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert (await check(SERVICE_NAME)).status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert (await check(LIVENESS)).status == health_pb2.HealthCheckResponse.SERVING
            stub = pb_grpc.ActivationServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetModelInfo(pb.GetModelInfoRequest())
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            servicer.attach(runtime.engine, runtime.batcher, runtime.miner)
            await running.set_ready()
            assert (await check(SERVICE_NAME)).status == health_pb2.HealthCheckResponse.SERVING
            assert (await check("")).status == health_pb2.HealthCheckResponse.SERVING
            info_ok = await stub.GetModelInfo(pb.GetModelInfoRequest())
            assert info_ok.model.loaded_layers == 4 and info_ok.model.num_layers == 30
    finally:
        await running.stop(activation_config.server)


async def test_reflection_lists_the_service(server) -> None:  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask():  # type: ignore[no-untyped-def]
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = {s.name async for resp in stub.ServerReflectionInfo(ask()) for s in resp.list_services_response.service}
    assert SERVICE_NAME in names and "grpc.health.v1.Health" in names


async def test_reflection_v1_lists_and_describes(server) -> None:  # type: ignore[no-untyped-def]
    """grpc.reflection.v1 (what newer tools ask first) answers like v1alpha: same messages,
    another package name."""
    from google.protobuf import descriptor_pb2

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        info = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                     request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection")]
        listed, described, itself = [r async for r in info(iter(requests), timeout=30)]
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE_NAME, "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= names
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in described.file_descriptor_response.file_descriptor_proto]
    assert any(f.package == "sagex.api.activation.v1" and f.service[0].name == "ActivationService" for f in files)
    own = [descriptor_pb2.FileDescriptorProto.FromString(b)
           for b in itself.file_descriptor_response.file_descriptor_proto]
    assert own and own[0].package == "grpc.reflection.v1"


async def test_model_info_and_request_id_echo(stub) -> None:  # type: ignore[no-untyped-def]
    call = stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=(("x-request-id", "req-123"),))
    info = await call
    assert ("x-request-id", "req-123") in list(await call.initial_metadata())
    sae = next(s for s in info.saes if s.id == EMBEDDED_SAE_ID)
    assert (sae.d_in, sae.d_sae, sae.k, sae.hook_layer) == (576, 4608, 32, 3)
    assert sae.architecture == pb.SAE_ARCHITECTURE_TOPK and sae.encode_backend == "torch"
    assert {t.role for t in info.model.special_tokens} >= {"bos", "eos"}


async def test_deadline_is_honoured(stub, runtime) -> None:  # type: ignore[no-untyped-def]
    before = runtime.batcher.stats.texts
    dropped = runtime.batcher.stats.dropped_cancelled

    async def gen():  # type: ignore[no-untyped-def]
        yield pb.StreamActivationsRequest(batch_id="d", sae_id=EMBEDDED_SAE_ID, texts=["slow " * 900] * 8,
                                          top_k=pb.TopKSelection(k=2))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.StreamActivations(gen(), timeout=0.5):
            pass
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(600):  # the server side gives up too: queued texts never reach the model
        if runtime.batcher.depth == 0:
            break
        await asyncio.sleep(0.1)
    assert runtime.batcher.stats.texts - before < 8
    assert runtime.batcher.stats.dropped_cancelled > dropped


async def test_cancelled_call_stops_its_work(stub, runtime) -> None:  # type: ignore[no-untyped-def]
    before = runtime.batcher.stats.texts
    dropped_before = runtime.batcher.stats.dropped_cancelled

    async def gen():  # type: ignore[no-untyped-def]
        yield pb.StreamActivationsRequest(batch_id="c", sae_id=EMBEDDED_SAE_ID, texts=["cancel me " * 300] * 40,
                                          top_k=pb.TopKSelection(k=2))
        await asyncio.sleep(30)

    call = stub.StreamActivations(gen())
    for _ in range(200):  # wait until the work is queued behind the worker
        if runtime.batcher.depth > 0:
            break
        await asyncio.sleep(0.02)
    assert runtime.batcher.depth > 0
    call.cancel()
    for _ in range(600):  # the batch already on the model finishes; the rest must be dropped
        if runtime.batcher.depth == 0:
            break
        await asyncio.sleep(0.1)
    ran = runtime.batcher.stats.texts - before
    assert ran < 40, f"{ran} of 40 texts ran after cancel"
    assert runtime.batcher.stats.dropped_cancelled > dropped_before


async def test_service_channels_balance_over_every_address_of_one_target() -> None:
    """A headless Service's DNS name resolves to every replica: the channels the
    agent and scorers open must spread calls over them, not pin the first."""
    from grpc_health.v1 import health

    from sagex.server.lifecycle import ServerOptions, channel_options

    class Counting(health.aio.HealthServicer):
        calls = 0

        async def Check(self, request, context):  # type: ignore[no-untyped-def]
            self.calls += 1
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    servers, servicers = [], []
    for _ in range(2):
        server = grpc.aio.server(options=ServerOptions().grpc_options())
        servicer = Counting()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append((server, port))
        servicers.append(servicer)
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for _, port in servers)
    try:
        async with grpc.aio.insecure_channel(target, options=channel_options()) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(20):
                await stub.Check(health_pb2.HealthCheckRequest())
    finally:
        for server, _ in servers:
            await server.stop(0)
    assert sum(s.calls for s in servicers) == 20 and min(s.calls for s in servicers) >= 5
