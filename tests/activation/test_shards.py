"""Sharded index builds are exact: real processes (the embedded model and SAE, a small
corpus, one shared cache folder) build the same bytes as one server alone.

* Two activation servers on loopback, asked for the same index at once while they
  serve other requests, share its hash shards; a worker of `python -m sagex.activation.mine` killed (SIGKILL) in the
  middle of a shard resumes it from its checkpoint, and the last worker merges.
* Every file of each index is compared byte for byte with a single-process build."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.activation.shards import shard_of, worker_shards

SHARDS = 4
BLOCK_BATCHES = 2  # blocks of 8 windows: a shard of ~40 windows checkpoints several times


def test_shard_of_is_a_stable_content_hash() -> None:
    windows = [tuple(range(k, k + 9)) for k in range(200)]
    for n in (1, 2, 3, 7):
        assigned = [shard_of(w, n) for w in windows]
        assert set(assigned) == set(range(n)), "every shard gets windows"
        assert assigned == [shard_of(list(w), n) for w in windows], "a function of the token ids alone"
    # Pinned: a shard must not move between machines, Python versions or releases.
    assert [shard_of((1, 2, 3, 4), 1000), shard_of((50256, 7, 7, 7, 7), 1000)] == PINNED


PINNED = [203, 68]


def test_workers_split_the_shards_between_them() -> None:
    assert [worker_shards(8, w, 3) for w in range(3)] == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert worker_shards(2, 3, 4) == []
    with pytest.raises(ValueError, match="0 <= worker < workers"):
        worker_shards(8, 3, 3)


def _config(path: Path, corpus: Path, cache: Path) -> Path:
    path.write_text(f'[activation]\ncorpus_dir = "{corpus}"\nmining_cache_dir = "{cache}"\n'
                    "max_mining_tokens = 6000\nwindow_tokens = 32\nmining_batch_windows = 4\n"
                    f"mining_shards = {SHARDS}\nmining_block_batches = {BLOCK_BATCHES}\n")
    return path


def _mine(config: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sagex.activation.mine", "--config", str(config), "--log-level",
                           "info", *flags], capture_output=True, text=True, timeout=300)


def _index(cache: Path) -> Path:
    [root] = [p for p in cache.iterdir() if p.is_dir()]
    assert (root / "complete.json").is_file()
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_bytes(got: Path, expected: Path) -> None:
    a, b = _files(got), _files(expected)
    assert got.name == expected.name, "the same settings give the same cache key"
    assert sorted(a) == sorted(b)
    assert {"stats.npz", "win_max.f32", "feat_max.f32", "shard_of.u16", f"shards/{SHARDS - 1}-of-{SHARDS}/shard.json"} \
        <= set(a)
    differ = [name for name in a if a[name] != b[name]]
    assert not differ, f"files differ: {differ}"


@pytest.fixture(scope="module")
def single(mining_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One process builds the whole index (every shard, then the merge): (config, index)."""
    tmp = tmp_path_factory.mktemp("single")
    config = _config(tmp / "activation.toml", mining_corpus, tmp / "cache")
    done = _mine(config)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "index ready" in done.stdout
    root = _index(tmp / "cache")
    with np.load(root / "stats.npz") as z:
        assert int(z["windows"]) > 150 and int(z["fire_tokens"].sum()) > 0
    return config, root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serving(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from sagex.activation.server import SERVICE_NAME

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(3000):
            assert proc.poll() is None, f"the server exited:\n{log.read_text()[-3000:]}"
            try:
                resp = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"the server never became ready:\n{log.read_text()[-3000:]}")


@pytest.mark.asyncio(loop_scope="session")
async def test_two_servers_share_the_shards_of_one_build_and_write_one_servers_bytes(
        single: tuple[Path, Path], mining_corpus: Path, tmp_path: Path) -> None:
    from sagex.api.activation.v1 import activation_service_pb2 as pb
    from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc
    from sagex.api.common.v1 import types_pb2
    from sagex.server.lifecycle import channel_options

    config = _config(tmp_path / "activation.toml", mining_corpus, tmp_path / "cache")
    ports = [_free_port(), _free_port()]
    logs = [tmp_path / f"server{i}.log" for i in range(2)]
    servers = [subprocess.Popen([sys.executable, "-m", "sagex.cli.main", "serve", "activation", "--port", str(port),
                                 "--config", str(config), "--log-level", "info"],
                                stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
               for port, log in zip(ports, logs, strict=True)]
    try:
        async def build(port: int) -> list[types_pb2.MiningProgress]:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()) as channel:
                stub = pb_grpc.ActivationServiceStub(channel)
                request = pb.BuildExemplarIndexRequest(sae_id=EMBEDDED_SAE_ID, split=types_pb2.CORPUS_SPLIT_EXEMPLAR,
                                                       interval_seconds=0.1)
                return [m.progress async for m in stub.BuildExemplarIndex(request, timeout=300)]

        async def traffic(port: int, stop: asyncio.Event) -> int:
            """Interactive requests of a long text all through the build: were a mining batch
            merged with one, its windows would be padded to that text and round differently."""
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()) as channel:
                stub = pb_grpc.ActivationServiceStub(channel)
                sent = 0
                while not stop.is_set():
                    request = pb.StreamActivationsRequest(batch_id=str(sent), sae_id=EMBEDDED_SAE_ID,
                                                          texts=["word " * 200], threshold=pb.ThresholdSelection())
                    async for _ in stub.StreamActivations(iter([request])):
                        pass
                    sent += 1
                return sent

        # Both ready first, then both asked at once: the build is shared, not raced.
        await asyncio.gather(*(_serving(p, s, log) for p, s, log in zip(ports, servers, logs, strict=True)))
        stop = asyncio.Event()
        busy = [asyncio.ensure_future(traffic(p, stop)) for p in ports for _ in range(6)]
        streams = await asyncio.gather(*(build(p) for p in ports))
        stop.set()
        assert min(await asyncio.gather(*busy)) > 0
    finally:
        for proc in servers:
            proc.send_signal(signal.SIGTERM)
        for proc in servers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
    for stream in streams:
        last = stream[-1]
        assert last.phase == types_pb2.MINING_PHASE_READY and last.windows_done == last.windows_total > 150
        assert last.shards_done == last.shards_total == SHARDS
        # The other server's shards count as done here, not toward this server's rate.
        assert last.resumed and any(m.phase == types_pb2.MINING_PHASE_SCANNING for m in stream)
    mined = [log.read_text().count("shard_done") for log in logs]
    assert sum(mined) == SHARDS and min(mined) > 0, f"each server mined some of the shards: {mined}"
    assert_same_bytes(_index(tmp_path / "cache"), single[1])


def test_a_killed_shard_worker_resumes_and_the_merge_is_one_servers_bytes(
        single: tuple[Path, Path], mining_corpus: Path, tmp_path: Path) -> None:
    config = _config(tmp_path / "activation.toml", mining_corpus, tmp_path / "cache")
    log = tmp_path / "worker0.log"
    worker = subprocess.Popen([sys.executable, "-m", "sagex.activation.mine", "--config", str(config),
                               "--worker", "0", "--workers", "2", "--merge", "--progress-seconds", "0.2"],
                              stdout=log.open("wb"), stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    ckpt = None
    try:
        deadline = time.monotonic() + 300
        while ckpt is None and worker.poll() is None and time.monotonic() < deadline:
            for shard in worker_shards(SHARDS, 0, 2):
                folder = tmp_path / "cache"
                found = list(folder.glob(f"*/shards/{shard}-of-{SHARDS}/scan.npz"))
                if found and not (found[0].parent / "shard.json").is_file():
                    size = int((np.fromfile(found[0].parents[2] / "shard_of.u16", np.uint16) == shard).sum())
                    block = 4 * BLOCK_BATCHES
                    try:
                        with np.load(found[0]) as z:  # two blocks in, and two or more still to go
                            if 2 * block <= int(z["windows_done"]) <= size - 2 * block:
                                ckpt = (shard, found[0].parent)
                    except (OSError, ValueError, KeyError):  # being replaced right now
                        pass
            time.sleep(0.01)
        worker.send_signal(signal.SIGKILL)  # a crash in the middle of a shard: no cleanup at all
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
    assert ckpt is not None, f"the worker never got to the middle of a shard:\n{log.read_text()[-3000:]}"
    shard, folder = ckpt
    assert not (folder / "shard.json").is_file(), "killed before the shard was complete"
    with np.load(folder / "scan.npz") as z:
        saved = int(z["windows_done"])
    assert saved >= 8 and saved % (4 * BLOCK_BATCHES) == 0, "a checkpoint per block of 2 batches of 4 windows"
    assert "shards, " in log.read_text() and " tok/s, ETA " in log.read_text(), "progress was printed while it ran"

    early = _mine(config, "--merge")
    assert early.returncode != 0 and "are not built yet" in early.stderr

    again = _mine(config, "--worker", "0", "--workers", "2", "--merge")
    assert again.returncode == 0, again.stderr[-3000:]
    events = [json.loads(line) for line in (again.stdout + again.stderr).splitlines() if line.startswith("{")]
    resumed = [(e["shard"], e["windows"]) for e in events if e["event"] == "shard_resumed"]
    assert resumed == [(shard, saved)], "the killed shard resumed from its checkpoint"
    assert "shards [1, 3] still to come" in again.stdout
    last = _mine(config, "--worker", "1", "--workers", "2", "--merge")
    assert last.returncode == 0, last.stderr[-3000:]
    assert f"index merged from {SHARDS} shards" in last.stdout
    assert_same_bytes(_index(tmp_path / "cache"), single[1])


def test_the_mine_command_says_what_to_fix(single: tuple[Path, Path]) -> None:
    bad = _mine(single[0], "--worker", "2", "--workers", "2")
    assert bad.returncode != 0 and "0 <= --worker < --workers" in bad.stderr


def test_a_small_split_gets_fewer_shards_so_each_packs_a_whole_block(activation_config) -> None:  # type: ignore[no-untyped-def]
    from sagex.activation.mining import ExemplarMiner

    miner = ExemplarMiner(lambda items: None, str.split, activation_config.corpus_dir, activation_config.corpus_dir,  # type: ignore[arg-type,return-value]
                          "m", window_tokens=32, max_tokens=1000, batch_windows=32, special_ids=set(), shards=8)
    block = 32 * 64
    assert [miner.shard_count(n) for n in (0, 10, block - 1, 2 * block, 3 * block - 1, 100 * block)] == \
        [1, 1, 1, 2, 2, 8]
