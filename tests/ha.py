"""Local highly available Redis deployments for tests and benchmarks, on loopback ports.

* ``LocalCluster(masters=3)``: a Redis Cluster of that many masters (``redis-server
  --cluster-enabled yes``, joined by ``redis-cli --cluster create``); ``url`` is its
  ``redis+cluster://`` URL, ``owner(key)`` the port of the master holding a key,
  ``queues_on_each_node(app)`` queue names whose slots are on different masters, and
  ``reshard(slot, to_port)`` moves one slot with ``redis-cli --cluster reshard``.
* ``LocalSentinel()``: a master, a replica and 3 sentinels (``redis-server --sentinel``) watching
  the service ``mymaster``; the replica may follow the master through a ``FaultProxy`` (its
  port given as ``replica_via``), so a test can stall replication. ``kill_master()`` is a
  SIGKILL; ``failed_over()`` waits until the sentinels name the replica.

Every server is a child process stopped by its PID (``stop()``), in a temporary directory
removed afterwards; nothing is written outside it. Ports are picked free (with the cluster
bus port, +10000, free too).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from redis import Redis
from redis.crc import key_slot

from aioq.embedded import redis_server_path


def free_port(bus: bool = False) -> int:
    """A TCP port free on 127.0.0.1 (and, for a cluster node, its bus port +10000 too)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not bus:
            return port
        if port < 55000:
            with socket.socket() as s, contextlib.suppress(OSError):
                s.bind(("127.0.0.1", port + 10000))
                return port
    raise RuntimeError("no free port pair found")


class _Servers:
    def __init__(self, prefix: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, port: int, *args: str) -> subprocess.Popen[bytes]:
        cmd = [
            redis_server_path(), *args,
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.dir), "--logfile", str(self.dir / f"{port}.log"),
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.procs[port] = proc
        wait_answers(port)
        return proc

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(port)
        if proc.poll() is None:
            proc.send_signal(sig)
        proc.wait(10)

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port, signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self, port: int) -> str:
        path = self.dir / f"{port}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def wait_answers(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with Redis(port=port, socket_timeout=1) as r:
                r.ping()
                return
        except OSError:
            pass
        except Exception as exc:  # a redis-py ConnectionError while it starts
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start: {exc}") from exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server on port {port} did not start")
        time.sleep(0.02)


def poll(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert callable(predicate)
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


class LocalCluster:
    """A Redis Cluster of ``masters`` masters on loopback (see the module docstring)."""

    def __init__(self, masters: int = 3) -> None:
        self.servers = _Servers("aioq-cluster-")
        self.ports = [free_port(bus=True) for _ in range(masters)]

    def start(self) -> LocalCluster:
        for port in self.ports:
            self.servers.spawn(
                port, "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "5000",
            )  # fmt: skip
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        poll(self._ok, 20, "every node to see the cluster state ok")
        return self

    def _ok(self) -> bool:
        for port in self.ports:
            with Redis(port=port) as r:
                info = r.execute_command("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info:
                    return False
        # and every node agrees where every slot is
        return len({tuple(map(tuple, self.slot_table(p))) for p in self.ports}) == 1

    def slot_table(self, port: int) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master's port) of each range, as node ``port`` sees it."""
        with Redis(port=port) as r:
            raw = r.execute_command("CLUSTER", "SLOTS")
        return sorted((int(start), int(end), int(master[1])) for start, end, master, *_ in raw)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def node_id(self, port: int) -> str:
        with Redis(port=port) as r:
            return str(r.execute_command("CLUSTER MYID").decode())

    def owner(self, key: str) -> int:
        """The port of the master holding ``key``."""
        return self.owner_of_slot(key_slot(key.encode()))

    def queues_on_each_node(self, app: str, prefix: str = "q") -> list[str]:
        """One queue name per master, in the order of ``ports``, for app ``app``."""
        table = self.slot_table(self.ports[0])
        found: dict[int, str] = {}
        for i in range(10_000):
            name = f"{prefix}{i}"
            slot = key_slot(f"{{{app}:{name}}}".encode())
            port = next(p for start, end, p in table if start <= slot <= end)
            found.setdefault(port, name)
            if len(found) == len(self.ports):
                return [found[p] for p in self.ports]
        raise AssertionError("no queue name found for some master")

    def reshard(self, slot: int, to_port: int, pipeline: int = 10) -> None:
        """Move ``slot`` to the master on ``to_port`` with ``redis-cli --cluster reshard``
        (it takes the first slots of the source: the slot is moved alone, by first moving
        the slots below it on its node along with it if need be, so pass a node's first
        slot)."""
        source = self.owner_of_slot(slot)
        first = min(s for s, _, p in self.slot_table(self.ports[0]) if p == source)
        assert first == slot, f"slot {slot} is not the first slot of its node ({first})"
        subprocess.run(
            ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{source}",
             "--cluster-from", self.node_id(source), "--cluster-to", self.node_id(to_port),
             "--cluster-slots", "1", "--cluster-yes", "--cluster-pipeline", str(pipeline)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        poll(lambda: self.owner_of_slot(slot) == to_port, 20, f"slot {slot} on {to_port}")

    def begin_migration(self, slot: int, to_port: int) -> int:
        """Mark ``slot`` migrating to ``to_port`` (importing there), as ``reshard`` does
        first; the source's port."""
        source = self.owner_of_slot(slot)
        with Redis(port=to_port) as r:
            r.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source))
        with Redis(port=source) as r:
            r.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(to_port))
        return source

    def migrate(self, slot: int, to_port: int, keys: list[str] | None = None) -> int:
        """MIGRATE ``keys`` (default: all the keys left) of ``slot`` from its source to
        ``to_port``; how many moved."""
        source = self.owner_of_slot(slot)
        with Redis(port=source) as r:
            if keys is None:
                keys = [
                    k.decode() for k in r.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100_000)
                ]
            if keys:
                r.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
        return len(keys)

    def finish_migration(self, slot: int, to_port: int) -> None:
        """Give ``slot`` to ``to_port`` on every node (the keys moved), as ``reshard`` ends."""
        target = self.node_id(to_port)
        for port in sorted(self.ports, key=lambda p: p != to_port):
            with Redis(port=port) as r:
                r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target)

    def owner_of_slot(self, slot: int) -> int:
        for start, end, port in self.slot_table(self.ports[0]):
            if start <= slot <= end:
                return port
        raise AssertionError(f"no master serves slot {slot}")

    def stop(self) -> None:
        self.servers.stop()

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()  # what did start, stopped: nothing outlives a failed start
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalSentinel:
    """A master, a replica and 3 sentinels watching ``mymaster`` (see the module docstring)."""

    SERVICE = "mymaster"

    def __init__(self, down_after_ms: int = 1000) -> None:
        self.servers = _Servers("aioq-sentinel-")
        self.master = free_port()
        self.replica = free_port()
        self.sentinels = [free_port() for _ in range(3)]
        self.down_after_ms = down_after_ms

    def start(self, replica_via: int | None = None) -> LocalSentinel:
        """Start the servers; the replica follows the master directly, or through the port
        ``replica_via`` (a proxy to the master the caller runs)."""
        self.servers.spawn(self.master)
        self.servers.spawn(
            self.replica, "--replicaof", "127.0.0.1", str(replica_via or self.master),
            "--repl-ping-replica-period", "1",
        )  # fmt: skip
        poll(self._replica_synced, 20, "the replica to sync with the master")
        for port in self.sentinels:
            conf = self.servers.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.SERVICE} 10000\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
            )
            self.servers.spawn(port, str(conf), "--sentinel")
        poll(self._sentinels_ready, 30, "the sentinels to know each other and the replica")
        return self

    def _replica_synced(self) -> bool:
        with Redis(port=self.replica) as r:
            info = r.info("replication")
            return bool(info.get("master_link_status") == "up")

    def _sentinels_ready(self) -> bool:
        for port in self.sentinels:
            with Redis(port=port) as r:
                state = r.sentinel_master(self.SERVICE)
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
        return True

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def master_port(self) -> int:
        with Redis(port=self.sentinels[0]) as r:
            _, port = r.sentinel_get_master_addr_by_name(self.SERVICE)
            return int(port)

    def kill_master(self) -> None:
        self.servers.kill(self.master, signal.SIGKILL)

    def failed_over(self, timeout: float = 30) -> None:
        """Wait until every sentinel names the replica as the master and it acts as one."""

        def promoted() -> bool:
            for port in self.sentinels:
                with Redis(port=port) as r:
                    _, at = r.sentinel_get_master_addr_by_name(self.SERVICE)
                    if int(at) != self.replica:
                        return False
            with Redis(port=self.replica) as r:
                return bool(r.info("replication")["role"] == "master")

        poll(promoted, timeout, "the sentinels to promote the replica")

    def stop(self) -> None:
        self.servers.stop()

    def __enter__(self) -> LocalSentinel:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pids_alive(*pids: int) -> list[int]:
    alive = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 0)
            alive.append(pid)
    return alive
