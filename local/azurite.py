"""Start Azurite (the Azure Storage emulator, pinned in package.json) for the stack and the tests.

Azurite is real storage: queues, tables and blobs over the same REST API as Azure, so the queue
port and the dev host exercise the same SDK calls they make in production.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# The well-known development account of the emulator; not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class AzuriteEndpoints:
    host: str
    blob_port: int
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        base = f"http://{self.host}"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={base}:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint={base}:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint={base}:{self.table_port}/{ACCOUNT};"
        )


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


# Ports below the kernel's ephemeral range: a port picked here is bound by another process a moment
# later (Azurite, the dev host), and in that gap the kernel hands ephemeral ports to every outgoing
# connection and every bind to port 0. Picking outside that range leaves only the (tiny) chance that
# two pickers draw the same random port; a stack's first start retries on it too.
_PICK_FLOOR = 15000


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, outside the ephemeral range, for a process that binds it later."""
    low, high = _ephemeral_range()
    floor, ceiling = (_PICK_FLOOR, low - 1) if low > _PICK_FLOOR + 1000 else (high + 1, 65535)
    for _ in range(200 if ceiling - floor > 1000 else 0):
        port = random.randint(floor, ceiling)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # every draw taken: let the kernel choose
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def azurite_binary() -> Path:
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return local
    found = shutil.which("azurite")
    if found:
        return Path(found)
    raise FileNotFoundError("Azurite is not installed: run `npm ci` (make does it for you)")


def _wait_for_ports(host: str, ports: list[int], proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if proc.poll() is not None:
            raise RuntimeError(f"Azurite exited early with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"Azurite did not open ports {pending} within {timeout}s")
        with contextlib.suppress(OSError), socket.create_connection((host, pending[0]), timeout=0.5):
            pending.pop(0)
            continue
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop Azurite's whole process group: it keeps idle keep-alive connections open on SIGTERM."""
    for sig, wait in ((signal.SIGINT, 3.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def running_azurite(
    location: Path,
    *,
    host: str = "127.0.0.1",
    ports: tuple[int, int, int] | None = None,
    in_memory: bool = False,
    log_file: Path | None = None,
    timeout: float = 60.0,
) -> Iterator[AzuriteEndpoints]:
    """Run Azurite until the block exits; ports default to free ones so runs never collide."""
    blob, queue, table = ports or (free_port(host), free_port(host), free_port(host))
    location.mkdir(parents=True, exist_ok=True)
    args = [
        str(azurite_binary()),
        "--silent",
        "--skipApiVersionCheck",
        "--blobHost", host, "--blobPort", str(blob),
        "--queueHost", host, "--queuePort", str(queue),
        "--tableHost", host, "--tablePort", str(table),
    ]  # fmt: skip
    # Azurite refuses --location together with --inMemoryPersistence.
    args += ["--inMemoryPersistence"] if in_memory else ["--location", str(location)]
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=location, start_new_session=True)
    try:
        _wait_for_ports(host, [blob, queue, table], proc, timeout)
        logger.info("azurite ready blob=%s queue=%s table=%s", blob, queue, table)
        yield AzuriteEndpoints(host, blob, queue, table)
    finally:
        _stop(proc)
        if out is not subprocess.DEVNULL:
            out.close()  # type: ignore[union-attr]


if __name__ == "__main__":  # pragma: no cover - manual use
    import tempfile

    logging.basicConfig(level=logging.INFO)
    with running_azurite(Path(tempfile.mkdtemp()), in_memory=True) as ep:
        print(ep.connection_string)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1)
    os._exit(0)
