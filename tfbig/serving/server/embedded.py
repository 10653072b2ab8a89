"""tfbig's embedded model server: TF Serving's gRPC and REST APIs in one process.

Started with the same ServeOptions as `tensorflow_model_server` flags
(`EmbeddedServer.from_options`: the flags' files are read, then the serving
parts built from them, see `parts.py`; the server wires them to listeners). The
gRPC server (grpcio) and the REST server (aiohttp, its event loop on a
background thread), both behind --ssl_config_file's TLS and --auth_token_file's
tokens when given (tls.py, auth.py), each run requests on their own HandlerPool, and both hand
them to one ServingCore. A poll thread rescans model base paths (and the model config
file) so versions hot-load and unload. `stop()` drains: readiness goes false,
listeners close, in-flight requests get `drain_seconds` to finish, the request
log writes what it holds, then models unload.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time

import grpc
import tensorflow as tf
from aiohttp import web
from google.protobuf import text_format

from tfbig.atoi import simple_atoi
from tfbig.serving import config_files, tls
from tfbig.serving.errors import ServingError
from tfbig.serving.options import ServeOptions
from tfbig.serving.server.allocator import fix_mmap_threshold
from tfbig.serving.server.grpc_api import add_services
from tfbig.serving.server.handler_pool import HandlerPool
from tfbig.serving.server.parts import ServingParts, assemble
from tfbig.serving.server.rest_api import RestApi

log = logging.getLogger("tfbig.serving")
# Requests wait in these pools while a batch forms, so by default they exceed the
# concurrency at which batching pays off; --grpc_max_threads and --rest_api_num_threads
# size them instead.
REQUEST_THREADS = 64


def _channel_arguments(text: str) -> list[tuple[str, object]]:
    """TF Serving's --grpc_channel_arguments: comma-separated key=value pairs."""
    arguments = []
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        number = simple_atoi(value, bits=32)  # as TF Serving's server.cc: an int32, else a string
        arguments.append((key.strip(), value.strip() if number is None else number))
    return arguments


class EmbeddedServer:
    """Serve the models described by `options` until `stop()`."""

    def __init__(self, options: ServeOptions, parts: ServingParts):
        """`parts` serve the requests (see `assemble`); `options` say where and how to listen."""
        self.options = options
        self.parts = parts
        self.metrics = parts.metrics
        self.manager = parts.manager
        self.core = parts.core
        self.request_log = parts.request_log
        self._ssl = parts.files.ssl
        self._guard = parts.guard
        self._health = parts.health
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._draining = False
        self._stop_once = threading.Lock()
        self._stop_polling = threading.Event()
        self._threads: list[threading.Thread] = []
        self._rest_pool: HandlerPool | None = None
        self._grpc: grpc.Server | None = None
        self._grpc_pool: HandlerPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    @classmethod
    def from_options(cls, options: ServeOptions) -> "EmbeddedServer":
        """The server `tfbig serve` runs: the files the flags name are read (and checked)
        first, then the parts are built from them."""
        return cls(options, assemble(options, config_files.ServerFiles.read(options)))

    def ready(self) -> bool:
        return not self._draining and self.manager.ready()

    # --- start -----------------------------------------------------------------

    def start(self) -> "EmbeddedServer":
        """Load every model, then open the ports; returns once both accept requests."""
        fix_mmap_threshold()  # request-sized buffers must not pile up in the threads' heaps
        if self.options.tensorflow_intra_op_parallelism > 0:
            tf.config.threading.set_intra_op_parallelism_threads(self.options.tensorflow_intra_op_parallelism)
        if self.options.tensorflow_inter_op_parallelism > 0:
            tf.config.threading.set_inter_op_parallelism_threads(self.options.tensorflow_inter_op_parallelism)
        self.manager.reconcile()
        try:
            self._check_labels()
            self._start_grpc()
            if self.options.rest_api_port:
                self._start_rest()
        except config_files.ServeConfigError:
            self.stop(grace=0)  # unload the models and close what did open: nothing is left running
            raise
        self._start_polling()
        return self

    def _check_labels(self) -> None:
        try:
            self.manager.check_labels()
        except ServingError as error:
            raise config_files.ServeConfigError(error.message) from None

    def _start_grpc(self) -> None:
        options = [("grpc.max_receive_message_length", self.options.max_request_bytes),
                   ("grpc.max_send_message_length", -1)]
        options += _channel_arguments(self.options.grpc_channel_arguments)
        threads = self.options.grpc_max_threads or REQUEST_THREADS
        self._grpc_pool = HandlerPool(threads, name="grpc")
        interceptors = [self._guard.grpc_interceptor()] if self._guard else []
        self._grpc = grpc.server(self._grpc_pool, options=options, interceptors=interceptors)
        add_services(self._grpc, self.core, self.metrics, self.request_log)
        if self._health is not None:
            self._health.add_to(self._grpc)
        address = f"{self.options.host}:{self.options.port}"
        try:
            if self._ssl is not None:
                self.grpc_port = self._grpc.add_secure_port(address, tls.grpc_server_credentials(self._ssl))
            else:
                self.grpc_port = self._grpc.add_insecure_port(address)
        except RuntimeError:  # grpcio raises "Failed to bind"; older releases returned port 0
            self.grpc_port = 0
        if not self.grpc_port:
            raise config_files.ServeConfigError(f"cannot listen for gRPC on {address}: is the port in use?")
        self._grpc.start()

    def _start_rest(self) -> None:
        prometheus = self.parts.files.monitoring.prometheus_config
        self._rest_pool = HandlerPool(self.options.rest_api_num_threads or REQUEST_THREADS, name="rest")
        api = RestApi(self.core, self.metrics, pool=self._rest_pool,
                      timeout_s=self.options.rest_api_timeout_in_ms / 1000,
                      max_request_bytes=self.options.max_request_bytes,
                      prometheus_path=prometheus.path if prometheus.enable else None,
                      cors=self.options.rest_api_enable_cors_support, is_ready=self.ready, guard=self._guard,
                      request_log=self.request_log)
        ssl_context = tls.rest_server_context(self._ssl) if self._ssl is not None else None
        started = concurrent.futures.Future()
        self._loop = asyncio.new_event_loop()

        async def open_site():
            self._runner = web.AppRunner(api.app(), access_log=None, shutdown_timeout=self.options.drain_seconds)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.options.host, self.options.rest_api_port,
                               ssl_context=ssl_context)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        def run_loop():
            asyncio.set_event_loop(self._loop)
            try:
                started.set_result(self._loop.run_until_complete(open_site()))
            except Exception as error:
                if self._runner is not None:
                    self._loop.run_until_complete(self._runner.cleanup())
                self._loop.close()
                started.set_exception(error)
                return
            self._loop.run_forever()

        thread = threading.Thread(target=run_loop, name="rest-loop", daemon=True)
        thread.start()
        self._threads.append(thread)
        try:
            self.rest_port = started.result()
        except OSError as error:
            self._loop = None  # closed with its thread: stop() has no REST listener to close
            raise config_files.ServeConfigError(
                f"cannot listen for REST on {self.options.host}:{self.options.rest_api_port}: "
                f"{error.strerror}") from None

    def _start_polling(self) -> None:
        fs_every = self.options.file_system_poll_wait_seconds
        config_every = self.options.model_config_file_poll_wait_seconds if self.options.model_config_file else 0
        if fs_every <= 0 and config_every <= 0:
            return
        thread = threading.Thread(target=self._poll, args=(fs_every, config_every), name="poll", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll(self, fs_every: float, config_every: float) -> None:
        tick = min(p for p in (fs_every, config_every) if p > 0)
        next_fs = next_config = time.monotonic()
        while not self._stop_polling.wait(tick):
            now = time.monotonic()
            try:
                if config_every > 0 and now >= next_config + config_every:
                    next_config = now
                    self._reload_config_file()
                if fs_every > 0 and now >= next_fs + fs_every:
                    next_fs = now
                    self.manager.reconcile()
            except Exception:  # polling must survive a bad file; the next pass retries
                log.exception("polling the model base paths failed")

    def _reload_config_file(self) -> None:
        config = config_files.read_text_proto(
            self.options.model_config_file, type(self.manager.config)(), "model_config_file")
        if text_format.MessageToString(config) != text_format.MessageToString(self.manager.config):
            log.info("model config file changed: reloading %s", self.options.model_config_file)
            self.manager.apply_config(config)

    # --- stop ------------------------------------------------------------------

    def stop(self, grace: float | None = None) -> None:
        """Drain: refuse new work, let in-flight requests finish, then unload models. Only the
        first call does it (SIGTERM and a `finally` may both ask); later ones return at once."""
        if not self._stop_once.acquire(blocking=False):
            return
        grace = self.options.drain_seconds if grace is None else grace
        self._draining = True
        if self._health is not None:
            self._health.drain()
        self._stop_polling.set()
        # Both listeners close before either waits for its requests: waiting for gRPC's first
        # kept REST taking new requests for as long as gRPC's in-flight ones took.
        grpc_stopped = self._grpc.stop(grace) if self._grpc is not None else None
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
        if grpc_stopped is not None:
            grpc_stopped.wait()
            self._grpc_pool.shutdown()
        for thread in self._threads:
            thread.join()
        if self._rest_pool is not None:
            self._rest_pool.shutdown()
        self.request_log.close()  # every request is answered: what it queued is all there is
        self.manager.unload_all()

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def describe(server: EmbeddedServer) -> str:
    names = ", ".join(server.manager.model_names())
    rest = f", REST :{server.rest_port}" if server.rest_port else ""
    tokens = f", bearer tokens from {server.options.auth_token_file}" if server.options.auth_token_file else ""
    signed = f", versions signed by {server.options.verify_key} only" if server.options.verify_key else ""
    return (f"serving {names} with tfbig's embedded server on gRPC :{server.grpc_port}{rest}{tokens}{signed} "
            f"(pid {os.getpid()})")
