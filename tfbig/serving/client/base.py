"""What `Client` and `AsyncClient` share: arguments, channel setup, retry backoff, signature lookup.

The two differ only in how they wait (blocking calls vs. an event loop), so
everything decided before a request is sent lives here once.
"""

from __future__ import annotations

import time

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from tfbig.protocol import AUTHORIZATION_HEADER, DEFAULT_SIGNATURE
from tfbig.serving.client.split import TrafficSplit
from tfbig.serving.errors import ClientArgumentError, ServingError
from tfbig.serving.tls import client_context
from tfbig.serving.tokens import authorization

PROTOCOLS = ("grpc", "rest")
# gRPC's default 4 MiB cap is below a batch of images or a long prompt batch.
MAX_MESSAGE_BYTES = 256 << 20


# gRPC waits up to 120 s between reconnects by default; a restarting model
# server is back in seconds, and a client should notice within MAX_BACKOFF_S.
MAX_BACKOFF_S = 2.0


def grpc_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", int(MAX_BACKOFF_S * 1000))]


def rest_base_url(target: str, secure: bool) -> str:
    """`host:port` as an http:// or (with TLS) https:// URL; a URL as given."""
    if "://" not in target:
        return f"{'https' if secure else 'http'}://{target}"
    if secure and not target.lower().startswith("https://"):
        raise ValueError(f"TLS was asked for (tls or certificates) but the target {target!r} is not "
                         f"https://; give host:port or an https:// URL")
    return target


def signature_cache_key(spec) -> tuple:
    """Signatures are fetched once per model, version and label; this names that entry."""
    return spec.name, spec.version.value if spec.HasField("version") else None, spec.version_label


def named_signature(signatures: dict, spec) -> dict:
    """The signature `spec` asks for, out of a model's signatures (FAILED_PRECONDITION, as TF Serving)."""
    name = spec.signature_name or DEFAULT_SIGNATURE
    if name not in signatures:
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f"Serving signature key \"{name}\" not found.")
    return signatures[name]


class ClientBase:
    """Validates the arguments, then opens the gRPC channel or names the REST base URL, with TLS
    when asked for or certificates are given and the bearer token on every request; with
    `split`, routes requests to labels by a key (split.py). Subclasses say which channel module
    (`grpc` or `grpc.aio`, which take the same arguments) and which HTTP session they wait with;
    the session sends `self._http_headers` and, when set, verifies with `self._ssl_context`."""

    channels = grpc

    def __init__(self, target: str, protocol: str = "grpc", *, timeout: float = 30.0,
                 max_retries: int = 3, backoff_s: float = 0.05,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, tls: bool = False,
                 root_certificates: bytes | None = None, private_key: bytes | None = None,
                 certificate_chain: bytes | None = None, token: str | None = None,
                 split: dict[str, float] | None = None, key=None):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if (private_key is None) != (certificate_chain is None):
            raise ValueError("give private_key and certificate_chain together (a client certificate "
                             "for mutual TLS), or neither")
        certificates = (root_certificates, private_key, certificate_chain)
        given = any(c is not None for c in certificates)
        secure = tls or given
        self.target = target
        self.protocol = protocol
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.split = None if split is None else TrafficSplit(split)
        self.key = key
        self._signatures: dict[tuple, dict] = {}
        # Sent with every call: gRPC metadata, or an HTTP header of the same name.
        self._metadata = ((AUTHORIZATION_HEADER, authorization(token)),) if token is not None else None
        if protocol == "grpc":
            options = grpc_options(max_message_bytes)
            if secure:
                # Without root_certificates grpc verifies the server with its bundled public roots.
                credentials = grpc.ssl_channel_credentials(*certificates)
                self._channel = self.channels.secure_channel(target, credentials, options=options)
            else:
                self._channel = self.channels.insecure_channel(target, options=options)
            self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        else:
            self._base_url = rest_base_url(target, secure)
            self._http_headers = dict(self._metadata or ())
            # Without certificates an https:// URL is verified with the system's authorities.
            self._ssl_context = client_context(*certificates) if given else None
            self._session = self.open_http_session()

    def open_http_session(self):
        raise NotImplementedError

    def _label(self, label: str | None, version: int | None, key) -> str | None:
        """The label a request goes to: the one it names, else the split's for its key (the
        call's, else the client's). A request naming a version or label bypasses the split."""
        key = self.key if key is None else key
        if self.split is None:
            if key is not None:
                raise ClientArgumentError("key= routes requests by a traffic split, and this client has "
                                          "none: give Client(..., split={'stable': 0.9, 'canary': 0.1})")
            return label
        if label is not None or version is not None:
            return label
        if key is None:
            raise ClientArgumentError("this client splits traffic between labels by a key: pass key=... "
                                      "(e.g. a user or session id) to the call or to the client")
        return self.split.label_for(key)

    def _deadline(self, timeout: float | None) -> float:
        """When a call must be over (time.monotonic()), its retries included."""
        return time.monotonic() + (timeout or self.timeout)

    def _retry_pause(self, error: ServingError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before retrying after `error`, or None to raise it: only UNAVAILABLE
        is retried (every other code would fail the same way again), with exponential backoff,
        at most `max_retries` times and never past the call's deadline."""
        pause = min(self.backoff_s * 2 ** attempt, MAX_BACKOFF_S)
        if error.code != grpc.StatusCode.UNAVAILABLE or attempt >= self.max_retries \
                or time.monotonic() + pause >= deadline:
            return None
        return pause

    def _require_rest(self, method: str) -> None:
        if self.protocol != "rest":
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               f"{method} is tfbig's extension of TF Serving's REST API; use protocol='rest' "
                               f"and the embedded server's REST port")

    def _require_grpc(self, method: str) -> None:
        if self.protocol != "grpc":
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               f"{method} exists only in TF Serving's gRPC API; use protocol='grpc'")
