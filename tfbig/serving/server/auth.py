"""Bearer tokens for the embedded server (`--auth_token_file`), on gRPC and REST alike.

TF Serving has no authentication of its own; deployments put a proxy in front. tfbig's server
checks `authorization: Bearer TOKEN` itself, against every token of the file, each compared in
constant time (hmac.compare_digest, all of them every time) so that the time a refusal takes
tells nothing about how much of a token was right. A refusal is UNAUTHENTICATED over gRPC and
HTTP 401 with TF Serving's `{"error": ...}` body and a `WWW-Authenticate: Bearer` challenge
over REST, counted in `:tfbig:serving:auth_refusals{entrypoint,reason}`; no token is ever logged
or labelled.

Health stays open, as probes carry no token: gRPC's health service, REST's /healthz and /readyz,
and the Prometheus page (TF Serving serves it on the REST port to anyone; a scraper rarely holds
a token, and the page holds counts, never tokens or data).

The file is watched: at most once a second a request checks its modification time, size and
inode, and a changed file is read again, so tokens are added and revoked without a restart. A
file that vanishes, cannot be read or holds a malformed line keeps the tokens read before, and
each such problem is logged once. A file that holds no token refuses every request.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time

import grpc
from aiohttp import web

from tfbig.protocol import AUTHORIZATION_HEADER, BEARER_SCHEME, REST_ERROR
from tfbig.serving.errors import ServeConfigError, ServingError
from tfbig.serving.tokens import bearer_token, read_tokens

log = logging.getLogger("tfbig.serving")
FLAG = "--auth_token_file"
# How often a request may look at the token file: a stat per request would cost every request,
# and a revoked token stops working within this many seconds.
CHECK_EVERY_S = 1.0
# Always reachable: what probes ask (grpc_health_probe, Kubernetes' gRPC probes).
OPEN_GRPC_PREFIX = "/grpc.health.v1.Health/"
# A refusal's reason (the metric's label) -> what the client is told, and RFC 6750's challenge.
REFUSALS = {
    "missing": (ServingError(grpc.StatusCode.UNAUTHENTICATED,
                             f"this server requires a bearer token: send `{AUTHORIZATION_HEADER}: "
                             f"{BEARER_SCHEME} TOKEN` (the client's token= argument)"), BEARER_SCHEME),
    "invalid": (ServingError(grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not accepted by this server"),
                f'{BEARER_SCHEME} error="invalid_token"'),
}


def _stamp(path: str) -> tuple[int, int, int]:
    """What tells a changed file: an atomic rename changes the inode, an edit the time or size."""
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class TokenFile:
    """The tokens of one file, read again when it changes (see the module docstring)."""

    def __init__(self, path: str):
        self._path = path
        self._stamp = _stamp_or_none(path)
        self._tokens = self._read()
        self._next_check = time.monotonic() + CHECK_EVERY_S
        self._checking = threading.Lock()
        self._failure: str | None = None  # what went wrong at the last look, already logged
        if not self._tokens:
            log.warning("%s %s holds no token: every request but health checks is refused", FLAG, path)

    def _read(self) -> tuple[bytes, ...]:
        return tuple(token.encode() for token in read_tokens(self._path, FLAG))

    def accepts(self, token: str) -> bool:
        self._refresh()
        presented = token.encode("utf-8", "surrogateescape")
        accepted = False
        for known in self._tokens:  # no early exit: every token is compared, every time
            accepted |= hmac.compare_digest(known, presented)
        return accepted

    def _refresh(self) -> None:
        now = time.monotonic()
        if now < self._next_check or not self._checking.acquire(blocking=False):
            return  # checked lately, or another request is checking now
        try:
            self._next_check = now + CHECK_EVERY_S
            try:
                stamp = _stamp(self._path)
                if stamp == self._stamp:
                    return
                tokens = self._read()
            except (OSError, ServeConfigError) as error:
                reason = f"{FLAG} {self._path}: {error.strerror}" if isinstance(error, OSError) else str(error)
                if reason != self._failure:  # each problem once, not once a second
                    log.warning("%s; keeping the %d tokens read before", reason, len(self._tokens))
                    self._failure = reason
                return
            self._tokens, self._stamp, self._failure = tokens, stamp, None
            log.info("%s %s changed: %d tokens", FLAG, self._path, len(tokens))
        finally:
            self._checking.release()


def _stamp_or_none(path: str):
    try:
        return _stamp(path)
    except OSError:
        return None  # read_tokens says why


class Guard:
    """Checks a request's Authorization value; the gRPC interceptor and the REST middleware
    both ask it. `record_refusal(entrypoint, reason)` counts the refusals."""

    def __init__(self, tokens: TokenFile, record_refusal):
        self._tokens = tokens
        self._record_refusal = record_refusal

    def refusal(self, authorization: str | None, entrypoint: str) -> str | None:
        """None when the request may go on, else why not: a key of REFUSALS."""
        token = bearer_token(authorization)
        if token is not None and self._tokens.accepts(token):
            return None
        reason = "missing" if token is None else "invalid"
        self._record_refusal(entrypoint, reason)
        return reason

    def grpc_interceptor(self) -> grpc.ServerInterceptor:
        return _GrpcInterceptor(self)

    def rest_middleware(self, is_open, reply):
        """An aiohttp middleware; `is_open(request)` names the open routes, `reply(status,
        payload)` writes the error as the REST API writes every other (CORS headers included)."""

        @web.middleware
        async def authenticate(request: web.Request, handler):
            if not is_open(request):
                reason = self.refusal(request.headers.get(AUTHORIZATION_HEADER), "REST")
                if reason is not None:
                    error, challenge = REFUSALS[reason]
                    response = reply(error.http_status, {REST_ERROR: error.message})
                    response.headers["WWW-Authenticate"] = challenge
                    return response
            return await handler(request)

        return authenticate


class _GrpcInterceptor(grpc.ServerInterceptor):
    def __init__(self, guard: Guard):
        self._guard = guard
        # Every guarded method is unary-unary (TF Serving's services); the refusal aborts before
        # the request is looked at.
        self._refusals = {reason: grpc.unary_unary_rpc_method_handler(
            lambda request, context, error=error: context.abort(error.code, error.message))
            for reason, (error, _) in REFUSALS.items()}

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(OPEN_GRPC_PREFIX):
            return continuation(handler_call_details)
        value = next((v for k, v in handler_call_details.invocation_metadata or ()
                      if k == AUTHORIZATION_HEADER), None)
        reason = self._guard.refusal(value, "GRPC")
        return continuation(handler_call_details) if reason is None else self._refusals[reason]


def guard(token_file: str, record_refusal) -> Guard | None:
    """The server's guard for `--auth_token_file`, or None without one (every request is let in)."""
    return Guard(TokenFile(token_file), record_refusal) if token_file else None
