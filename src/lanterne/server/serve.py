"""Running the server: uvicorn on loopback unless told otherwise, with a warning when it is not."""

from __future__ import annotations

import ipaddress
import logging
import sys

from lanterne.errors import ConfigError
from lanterne.server.limits import Limits

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(model, tokenizer, model_name: str, *, host: str = LOOPBACK, port: int = 8000, limits: Limits | None = None) -> None:
    """Serve until interrupted. Another address than loopback prints a warning: anyone who reaches it can use the model."""
    import uvicorn

    from lanterne.server.app import create_app

    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is not a TCP port; choose one from 1 to 65535")
    if not is_loopback(host):
        print(
            f"warning: listening on {host}, not only on this machine: anyone who can reach it can use the model "
            "(the limits bound each request, but there is no password)",
            file=sys.stderr,
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    app = create_app(model, tokenizer, model_name, limits)
    print(f"Lanterne explorer: http://{host if ':' not in host else f'[{host}]'}:{port}/  (API docs: /docs)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
