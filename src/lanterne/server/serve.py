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


def for_batches(model):
    """The weights answers are decoded with: bf16 where the device multiplies bf16, else fp32 (`model` itself
    when it already is). Not the quantised layouts: their kernels change with the number of rows decoded
    together, and the same seed must write the same text alone or among thirty. The slides keep `model`."""
    import copy

    import torch

    from lanterne.model.quantized_linear import full_precision_dtype

    parameter = next(model.parameters())
    if getattr(model, "quantized", None) or not hasattr(model, "blocks"):
        return model
    dtype = full_precision_dtype() if parameter.device.type == "cpu" else torch.bfloat16
    if parameter.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        dtype = torch.float32
    return model if parameter.dtype == dtype else copy.deepcopy(model).to(dtype)


def serve(model, tokenizer, model_name: str, *, host: str = LOOPBACK, port: int = 8000, limits: Limits | None = None,
          compile: bool = True) -> None:
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
    progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    app = create_app(model, tokenizer, model_name, limits, generation_model=for_batches(model), compile=compile,
                     progress=progress)
    print(f"Lanterne explorer: http://{host if ':' not in host else f'[{host}]'}:{port}/  (API docs: /docs)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
