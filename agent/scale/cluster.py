"""Connecting to Ray: a local instance on the loopback address, or an existing cluster.

``address`` follows Ray's own meaning: ``None`` or ``"local"`` starts a Ray instance inside this
process's machine (on 127.0.0.1, nothing reachable from outside), ``"auto"`` joins the cluster
that ``ray start`` made on this machine, and ``HOST:PORT`` joins the cluster whose head is there.
Ray is an optional extra (``pip install -e '.[ray]'``); without it the scripts say so.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from drive_attention.envs.configuration import ConfigError

LOOPBACK = "127.0.0.1"
INSTALL_HINT = "pip install -e '.[ray]' (Ray and Optuna)"
START_HINT = (
    "start one with `ray start --head` (see docs/sweeps-and-ray.md), or leave the address out "
    "for a local instance"
)
PROBE_SECONDS = 20  # [s] a Ray head answers the probe in a few; anything else is refused then
# Ray's own GCS client asks the head for the cluster's id (4 s for the answer, 2 s for each of its
# two connections), in a child process: Ray's connect retries for many minutes where something
# that is not Ray listens, and only a process can be stopped at a deadline. Exit 3: no answer.
GCS_PROBE = """
import sys
from ray._raylet import InnerGcsClient
from ray.exceptions import RpcError
try:
    InnerGcsClient.standalone(sys.argv[1], None, 4000)
except RpcError:
    sys.exit(3)
"""


def require_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def is_local(address: str | None) -> bool:
    return address in (None, "", "local")


@contextmanager
def connected(address: str | None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, initialised for the duration of the block (or as already initialised by the caller,
    e.g. a test that started its own cluster, which is then left running)."""
    if is_local(address):
        # before ray is imported: Ray resolves "this node" to the machine's outward address
        # unless told that no cluster is wanted; a local instance stays on the loopback address
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = require_ray()
    if not is_local(address) and address != "auto":
        _probe(address)
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    try:
        if is_local(address):
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                **options,
            )
        else:
            ray.init(address=address, **options)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise ConfigError(
            f"--ray {address}: cannot connect to a Ray cluster there ({err}); {START_HINT}"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _probe(address: str) -> None:
    """Fail in seconds (at most :data:`PROBE_SECONDS`), not after Ray's minutes of retries, when
    nothing listens at the address (HOST:PORT, or ray://HOST:PORT for the Ray client) or what
    listens at HOST:PORT does not answer as a Ray head."""
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"--ray {address}: give auto, or the head's HOST:PORT (e.g. 10.0.0.5:6379)"
        )
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ConfigError(
            f"--ray {address}: no Ray head answers there ({err.strerror or err}); {START_HINT}"
        ) from None
    if "://" in address:  # the Ray client's server is not the head's GCS; Ray bounds that wait
        return
    if gcs_answers(f"{host}:{port}") is False:
        raise ConfigError(
            f"--ray {address}: something listens there but does not answer as a Ray head "
            f"within {PROBE_SECONDS} s; {START_HINT}"
        )


def gcs_answers(address: str) -> bool | None:
    """Whether a Ray head's GCS at ``HOST:PORT`` answers within :data:`PROBE_SECONDS`; None where
    this version of Ray cannot be asked (then ``ray.init`` decides, without a deadline)."""
    try:
        code = subprocess.run(
            [sys.executable, "-c", GCS_PROBE, address],
            capture_output=True,
            timeout=PROBE_SECONDS,
            env={**os.environ, "RAY_gcs_rpc_server_connect_timeout_s": "2"},
        ).returncode
    except subprocess.TimeoutExpired:
        return False
    return True if code == 0 else False if code == 3 else None


def check_resources(ray: Any, cpus: float, gpus: float, per: str = "job") -> None:
    """Refuse (before any work) a job size that no node can ever place, instead of waiting on it
    forever. A job (or trial, ``per``) runs on one node: what counts is the largest node, not the
    cluster's total."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        return
    most_cpus = max((r.get("CPU", 0) for r in nodes), default=0)
    most_gpus = max((r.get("GPU", 0) for r in nodes), default=0)
    if gpus > most_gpus:
        raise ConfigError(
            f"--gpus-per-{per} {gpus:g}: no Ray node has that many GPU(s) (the most on one node: "
            f"{most_gpus:g}); join a node with a GPU (`ray start --address HEAD:6379` on it) or "
            f"lower --gpus-per-{per}"
        )
    if cpus > most_cpus:
        raise ConfigError(
            f"--cpus-per-{per} {cpus:g}: a {per} runs on one node, and the largest Ray node has "
            f"{most_cpus:g} CPU(s); lower --cpus-per-{per} or join a larger node"
        )
    raise ConfigError(
        f"--cpus-per-{per} {cpus:g} with --gpus-per-{per} {gpus:g}: no Ray node has both; lower "
        "one, or join a node that has both"
    )


@contextmanager
def loopback_cluster(workers: int = 2, cpus_per_worker: int = 1) -> Iterator[Any]:
    """A multi-node Ray cluster on this machine, every node on 127.0.0.1 (tests and the launcher
    timing): a head without CPUs (the driver and the run store live there) and ``workers``
    worker nodes, each with its own raylet and object store. Connected for the block."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported
    ray = require_ray()
    if ray._private.ray_constants.ENABLE_RAY_CLUSTER:  # imported before this was set
        raise RuntimeError("loopback_cluster: Ray was imported before it; import it after")
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "node_ip_address": LOOPBACK},
    )
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=cpus_per_worker, node_ip_address=LOOPBACK)
        ray.init(address=cluster.address, _node_ip_address=LOOPBACK, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
