"""The errors of tfbig's serving, all five in one place.

`ServingError` is everything a TF Serving server can answer with. TF Serving
reports failures as a canonical status code plus a message; gRPC carries them
as a `grpc.StatusCode`, REST as an HTTP status and a body `{"error": message}`.
The client raises, and the embedded server produces, `ServingError(code,
message)` so callers handle both protocols the same way. The HTTP mapping is
TF Serving's own (model_servers/http_server.cc).

`ClientArgumentError` is a client's argument that cannot work (a traffic
split or its key). The other three are about starting a server, not about a request:
`ServeConfigError` (a flag or config file is wrong), `ModelServerError`
(tensorflow_model_server failed) and `ServerStartError` (a `tfbig serve`
child process failed to serve).
"""

from __future__ import annotations

import grpc

from tfbig.errors import RunError, UsageError

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# An HTTP status seen by the client maps back to the code that most likely
# produced it (400 is shared by three codes; INVALID_ARGUMENT is the usual one).
_CODE_FOR_HTTP = {status: code for code, status in reversed(HTTP_STATUS.items())}
_CODE_FOR_HTTP.update({400: grpc.StatusCode.INVALID_ARGUMENT, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
                       500: grpc.StatusCode.INTERNAL, 409: grpc.StatusCode.ABORTED})


class ServingError(RunError):
    """A request failed: `code` is a `grpc.StatusCode`, `message` the server's words."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    def answer(self) -> "ServingError":
        """This error as a value to answer with: no traceback and no chained errors, whose
        frames would hold the request's decoded data for as long as the answer lives."""
        return ServingError(self.code, self.message)

    @classmethod
    def from_http(cls, status: int, message: str) -> "ServingError":
        return cls(_CODE_FOR_HTTP.get(status, grpc.StatusCode.UNKNOWN), message)

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> "ServingError":
        return cls(error.code(), error.details() or "")


class ServeConfigError(UsageError, ValueError):
    """A serving flag or config file is wrong; the message says which and how."""


class ClientArgumentError(UsageError, ValueError):
    """A client was given an argument it cannot use (a traffic split, its key); says which."""


class ModelServerError(RunError, RuntimeError):
    """tensorflow_model_server exited or never made its models available."""


class ServerStartError(RunError, RuntimeError):
    """The server exited, or did not make the model AVAILABLE in time; says why."""


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def deadline_exceeded() -> ServingError:
    """What gRPC itself says when a call's deadline passes."""
    return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
