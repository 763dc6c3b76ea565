"""Joining a Ray cluster, the one place rkconvert imports ray: matrix entries and hybrid trial builds
run as its tasks."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from typing import Iterator

from converter.common.errors import UserError

INSTALL_HINT = "install it on this machine and every node: pip install 'ray[default]==2.60.0' (README: On Ray)"


ANSWER_SECONDS = 5


def check_reachable(address: str) -> None:
    """UserError unless something answers at HOST:PORT (ray.init would retry an unreachable one for minutes)."""
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=ANSWER_SECONDS).close()
    except (OSError, ValueError) as e:
        raise UserError(f"--ray {address}: no Ray cluster answers there ({e}); start one with `ray start --head` "
                        "or give its HOST:PORT") from None


@contextmanager
def joined(address: str) -> Iterator:
    """The `ray` module, connected to the cluster at `address` (auto: the one started on this machine)."""
    check_reachable(address)
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray needs Ray: {INSTALL_HINT}") from None
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise UserError(f"--ray {address}: no Ray cluster to join ({str(e).splitlines()[0]}); start one with "
                        "`ray start --head` or give its address") from None
    try:
        yield ray
    finally:
        ray.shutdown()
