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

from tfbig.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "tfbig.serving.client": ("AsyncClient", "Client", "Credentials"),
    "tfbig.serving.server.embedded": ("EmbeddedServer",),
    "tfbig.serving.errors": ("ClientArgumentError", "ServeConfigError", "ServingError"),
    "tfbig.serving.options": ("ServeOptions", "parse_serve_args"),
    "tfbig.serving.serve": ("serve",),
})
