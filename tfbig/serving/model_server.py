"""Run the real `tensorflow_model_server` with `tfbig serve`'s options.

tfbig's extra flags (version policy, labels, batching, Prometheus, request logs) only exist
as config files for the binary, so they are written into a config directory
and the binary is pointed at them; its own flags are passed through with its
`--flag=value` syntax. The binary stays a child in the foreground: `tfbig
serve` returns only once it has exited, forwards SIGTERM/SIGINT to it (what
Kubernetes and docker send) and stops it on any error, so that no binary is
left running without the `tfbig serve` that started it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from tfbig.serving import config_files
from tfbig.serving.errors import ModelServerError, ServeConfigError
from tfbig.serving.logging_config import with_request_logging
from tfbig.serving.options import SERVE_TAG, ServeOptions

BINARY = "tensorflow_model_server"
# How long the binary gets to exit after SIGTERM before it is killed.
_STOP_GRACE_S = 10.0
# Short enough that a server which just finished loading is seen at once.
_POLL_INTERVAL_S = 0.2
_STATUS_TIMEOUT_S = 1.0


def find_model_server() -> str | None:
    """The binary on PATH, or None: `tfbig serve --engine auto` falls back to the embedded server."""
    return shutil.which(BINARY)


def _flag(name: str, value) -> str:
    """TF Serving's flag parser takes `--name=value` and spells booleans true/false."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"--{name}={value}"


def model_server_command(options: ServeOptions, config_dir: str, binary: str) -> list[str]:
    """The binary's argv, after writing the config files it reads into `config_dir`.

    A model config built from --model_base_path is written to `models.config`,
    which is how --model_version_policy and --version_labels reach the binary.
    A --model_config_file given by the user is checked and passed by its own
    path, so that --model_config_file_poll_wait_seconds keeps seeing its edits,
    unless --request_log_dir adds a logging_config to its models: then a copy is.
    """
    if options.verify_key:
        # Checking the versions on disk first would not do: the binary loads later
        # versions (file system and config polls) unchecked.
        raise ServeConfigError(
            f"--verify_key: {BINARY} cannot check version signatures and would load later "
            f"versions unchecked; serve with --engine embedded (--engine auto picks it when "
            f"--verify_key is given)")
    if options.auth_token_file:
        raise ServeConfigError("--auth_token_file: tensorflow_model_server has no authentication; serve "
                               "with --engine embedded, or put an authenticating proxy in front of the binary")
    os.makedirs(config_dir, exist_ok=True)
    models = with_request_logging(config_files.model_server_config(options), options)
    if options.model_config_file and not options.request_log_dir:
        models_path = os.path.abspath(options.model_config_file)
    else:
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            raise ServeConfigError(
                "--request_log_dir with --model_config_file_poll_wait_seconds: tensorflow_model_server "
                "would poll a copy of the config with the logging added; put logging_config in "
                f"{options.model_config_file} instead")
        models_path = config_files.write_text_proto(
            models, os.path.join(config_dir, config_files.MODEL_CONFIG_FILE))
    argv = [
        binary,
        _flag("port", options.port),
        _flag("rest_api_port", options.rest_api_port),
        _flag("rest_api_timeout_in_ms", options.rest_api_timeout_in_ms),
        _flag("model_config_file", models_path),
        _flag("model_config_file_poll_wait_seconds", options.model_config_file_poll_wait_seconds),
        _flag("file_system_poll_wait_seconds", options.file_system_poll_wait_seconds),
    ]
    batching = config_files.batching_parameters(options)
    if batching is not None:
        path = config_files.write_text_proto(batching, os.path.join(config_dir, config_files.BATCHING_FILE))
        argv += [_flag("enable_batching", True), _flag("batching_parameters_file", path)]
    monitoring = config_files.monitoring_config(options)
    if monitoring.prometheus_config.enable:
        path = config_files.write_text_proto(monitoring, os.path.join(config_dir, config_files.MONITORING_FILE))
        argv.append(_flag("monitoring_config_file", path))
    if config_files.ssl_config(options) is not None:  # read now so a bad file fails before launch
        argv.append(_flag("ssl_config_file", os.path.abspath(options.ssl_config_file)))
    argv += [
        _flag("enable_model_warmup", options.enable_model_warmup),
        _flag("num_request_iterations_for_warmup", options.num_request_iterations_for_warmup),
        _flag("max_num_load_retries", options.max_num_load_retries),
        _flag("load_retry_interval_micros", options.load_retry_interval_micros),
        _flag("allow_version_labels_for_unavailable_models",
              options.allow_version_labels_for_unavailable_models),
        _flag("rest_api_enable_cors_support", options.rest_api_enable_cors_support),
    ]
    if options.grpc_channel_arguments:
        argv.append(_flag("grpc_channel_arguments", options.grpc_channel_arguments))
    if options.enable_grpc_healthcheck_service:
        argv.append(_flag("enable_grpc_healthcheck_service", True))
    if config_files.saved_model_tags(options) != {SERVE_TAG}:
        argv.append(_flag("saved_model_tags", options.saved_model_tags))
    for name in ("tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism",
                 "grpc_max_threads", "rest_api_num_threads"):
        if getattr(options, name) > 0:  # 0 means "auto" to tfbig; the binary picks then
            argv.append(_flag(name, getattr(options, name)))
    return argv + list(options.pass_through)


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), _STATUS_TIMEOUT_S):
        return True
    return False


def _poll(check, port: int, timeout_s: float, process) -> None:
    """Call `check()` -> (models still waiting, note) until none waits; raise if the binary
    exits first or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        waiting, note = check()
        if process.poll() is not None:
            raise ModelServerError(
                f"{BINARY} exited with code {process.returncode} before serving "
                f"{', '.join(waiting) or 'its models'}; its log above says why")
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise ModelServerError(
                f"{BINARY} did not make {', '.join(waiting)} available on 127.0.0.1:{port} "
                f"within {timeout_s:g} s{note}")
        time.sleep(_POLL_INTERVAL_S)


def wait_until_available(port: int, model_names, timeout_s: float, process, *, tls: bool = False) -> None:
    """Return once every model has an AVAILABLE version, asking the binary over gRPC.

    The binary opens its ports only after the first load, and a model that
    fails to load keeps it waiting or makes it exit; both end here with an
    error that says which, instead of a server that silently serves nothing.
    With TLS (`--ssl_config_file`) the binary could only be asked with a
    certificate naming this host, and a client certificate when it verifies
    clients, which the launcher need not hold; it waits for the gRPC port to
    open instead, which TF Serving does only once every model's first load
    is done (ServerCore::Create waits for them and fails when one fails).
    """
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    waiting = list(model_names)
    if tls:
        _poll(lambda: ([] if _port_open(port) else waiting, ""), port, timeout_s, process)
        return
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    # Reconnect quickly: gRPC's default backoff grows to minutes while the binary loads.
    channel_options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=channel_options) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)

        def check():
            for name in list(waiting):
                request = get_model_status_pb2.GetModelStatusRequest()
                request.model_spec.name = name
                try:
                    response = stub.GetModelStatus(request, timeout=_STATUS_TIMEOUT_S)
                except grpc.RpcError as error:
                    return waiting, f" (last answer: {error.code().name}: {error.details()})"
                if any(v.state == available for v in response.model_version_status):
                    waiting.remove(name)
            return waiting, ""

        _poll(check, port, timeout_s, process)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _forwarding_signals(process, received: list):
    """SIGTERM/SIGINT go to the binary, which decides how to stop; we wait for it."""
    def forward(signum, frame):
        received.append(signum)
        if process.poll() is None:
            process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(process) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _exit_status(code: int) -> int:
    """A child killed by signal N exits with 128 + N, as a shell reports it."""
    return code if code >= 0 else 128 - code


def run_model_server(options: ServeOptions, *, binary: str, wait_timeout_s: float = 300) -> int:
    """Run the binary in the foreground until it exits; return its exit status.

    --port 0 means a free port, as with the embedded server (to the binary it
    would mean no gRPC, which the readiness check needs). Must be called from
    the main thread, which is where signal handlers can be installed. With --version the
    binary is asked for its version alone: it prints it and exits before reading any other
    flag's file (main.cc), so no model needs to be given.
    """
    if options.version:
        return _exit_status(subprocess.call([binary, "--version"]))
    if options.port == 0:
        options = dataclasses.replace(options, port=_free_port())
    made_dir = not options.config_dir
    config_dir = options.config_dir or tempfile.mkdtemp(prefix="tfbig-model-server-")
    try:
        names = [m.name for m in config_files.model_server_config(options).model_config_list.config]
        argv = model_server_command(options, config_dir, binary)
        if options.ssl_config_file and options.rest_api_port:
            print(f"note: {BINARY} serves REST without TLS: --ssl_config_file secures its gRPC port only "
                  f"(the embedded server secures both)", file=sys.stderr, flush=True)
        process = subprocess.Popen(argv)
        received = []
        try:
            with _forwarding_signals(process, received):
                try:
                    wait_until_available(options.port, names, wait_timeout_s, process,
                                         tls=bool(options.ssl_config_file))
                    rest = f", REST :{options.rest_api_port}" if options.rest_api_port else ""
                    print(f"serving {', '.join(names)} with {BINARY} on gRPC :{options.port}{rest}",
                          file=sys.stderr, flush=True)
                except ModelServerError:
                    if not received:  # a stop asked for while starting is not an error
                        raise
                return _exit_status(process.wait())
        finally:
            _stop(process)
    finally:
        if made_dir:
            shutil.rmtree(config_dir, ignore_errors=True)
