"""`tfbig serve`: run tensorflow_model_server when it is there, else the embedded server.

Either way the process stays in the foreground like the binary does, and
SIGTERM (what Kubernetes and docker send) drains in-flight requests before
exiting, so a rolling update loses no request.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading

from tfbig.serving.options import ServeOptions


def uses_model_server(options: ServeOptions, binary: str | None) -> bool:
    """Whether `tfbig serve` runs the binary: asked for, or auto and installed, unless
    --verify_key or --auth_token_file asks for what only the embedded server does
    (check signatures, check bearer tokens)."""
    if options.engine == "auto":
        return binary is not None and not options.verify_key and not options.auth_token_file
    return options.engine == "tensorflow_model_server"


def serve(options: ServeOptions, *, verbose: bool = False) -> int:
    """Runs the binary (which needs no TensorFlow here) or the embedded server, importing
    TensorFlow for that (without its start-up lines unless `verbose`)."""
    from tfbig.serving.model_server import find_model_server, run_model_server
    from tfbig.serving.server.onednn import default_to_eigen_kernels
    from tfbig.startup import import_tensorflow

    binary = find_model_server()
    if uses_model_server(options, binary):
        if binary is None:
            from tfbig.serving.errors import ServeConfigError

            raise ServeConfigError("--engine tensorflow_model_server: the binary is not on PATH; "
                                   "install TF Serving or use --engine embedded")
        return run_model_server(options, binary=binary)
    default_to_eigen_kernels()  # TensorFlow reads the switch once, as it is imported
    import_tensorflow(verbose=verbose)
    if options.version:
        print(embedded_version())
        return 0
    return serve_embedded(options)


def embedded_version() -> str:
    """What `tensorflow_model_server --version` prints (main.cc), for the embedded server:
    tfbig's version, marked as tfbig's, in the server's place."""
    import tensorflow as tf

    import tfbig

    return f"TensorFlow ModelServer: {tfbig.__version__}+tfbig.embedded\nTensorFlow Library: {tf.__version__}"


def check_ports_free(options: ServeOptions) -> None:
    """Refuse a port in use at once: before loading the models (seconds), and before
    gRPC logs its own multi-line bind failure; the server still checks as it binds."""
    from tfbig.serving.errors import ServeConfigError

    for flag, port in (("--port", options.port), ("--rest_api_port", options.rest_api_port)):
        if not port:  # 0: no REST API, or any free port
            continue
        family, kind, proto, _, address = socket.getaddrinfo(
            options.host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            # As servers do, so that a port left in TIME_WAIT by a stopped server counts as free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                raise ServeConfigError(
                    f"{flag}={port}: cannot listen on {options.host}:{port}: {error.strerror}; "
                    f"choose another port or stop what is using it") from None


def serve_embedded(options: ServeOptions) -> int:
    from tfbig.serving.server.allocator import exempt_startup_objects
    from tfbig.serving.server.embedded import EmbeddedServer, describe

    check_ports_free(options)
    exempt_startup_objects()  # this process only serves: its imports stay for good
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server = EmbeddedServer.from_options(options).start()
        print(describe(server), file=sys.stderr, flush=True)
        stop.wait()
        print(f"draining (up to {options.drain_seconds:g} s) ...", file=sys.stderr, flush=True)
        server.stop()
        print("stopped", file=sys.stderr, flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
