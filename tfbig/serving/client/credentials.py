"""What a client shows a server and checks it by, gathered once and handed on.

The command line reads it from files (`--token-file`, `--ca-cert`, `--client-cert`,
`--client-key`, `--tls`; the token from $TFBIG_SERVING_TOKEN when no file is named), and passes
it to every client it opens, `tfbig models ... --server` and the pipeline included, so a call
that needs a token or a certificate cannot forget it on the way. Its fields are `Client`'s
keyword arguments of the same names.
"""

from __future__ import annotations

import dataclasses
import os

from tfbig.protocol import TOKEN_ENV
from tfbig.serving.errors import ServeConfigError
from tfbig.serving.tokens import check_token, read_tokens


@dataclasses.dataclass(frozen=True)
class Credentials:
    token: str | None = None
    tls: bool = False
    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None

    def client_kwargs(self) -> dict:
        """`Client(target, **credentials.client_kwargs())`."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_files(cls, *, token_file: str | None = None, ca_cert: str | None = None,
                   client_cert: str | None = None, client_key: str | None = None, tls: bool = False,
                   environ=os.environ) -> "Credentials":
        """The first token of `token_file` (the server's format: one per line, `#` comments),
        else $TFBIG_SERVING_TOKEN; PEM files as bytes."""
        if (client_cert is None) != (client_key is None):
            raise ServeConfigError("give --client-cert and --client-key together (mutual TLS), or neither")
        if token_file:
            tokens = read_tokens(token_file, "--token-file")
            if not tokens:
                raise ServeConfigError(f"--token-file: {token_file} holds no token")
            token = tokens[0]
        elif environ.get(TOKEN_ENV):
            try:
                token = check_token(environ[TOKEN_ENV].strip())
            except ServeConfigError as error:
                raise ServeConfigError(f"${TOKEN_ENV}: {error}") from None
        else:
            token = None
        return cls(token=token, tls=tls, root_certificates=_read(ca_cert, "--ca-cert"),
                   private_key=_read(client_key, "--client-key"),
                   certificate_chain=_read(client_cert, "--client-cert"))


def _read(path: str | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise ServeConfigError(f"{flag}: cannot read {path}: {error.strerror}") from None
