"""Serving: a TF Serving client, the `tensorflow_model_server` launcher and an
embedded server that speaks the same gRPC and REST protocols.

    from tfbig.serving import Client
    client = Client("localhost:8500")                       # gRPC
    logits = client.predict("digits", images)["logits"]
    Client("localhost:8501", protocol="rest").status("digits")

`tfbig serve` takes tensorflow_model_server's flags and runs the real binary
when it is installed, else `EmbeddedServer`. Names are imported on first use
so that `tfbig --help` does not wait for TensorFlow.
"""

import importlib

_EXPORTS = {
    "AsyncClient": "tfbig.serving.client",
    "Client": "tfbig.serving.client",
    "EmbeddedServer": "tfbig.serving.server.embedded",
    "ServeConfigError": "tfbig.serving.errors",
    "ServeOptions": "tfbig.serving.options",
    "ServingError": "tfbig.serving.errors",
    "parse_serve_args": "tfbig.serving.options",
    "serve": "tfbig.serving.serve",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tfbig.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
