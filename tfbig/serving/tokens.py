"""Bearer tokens (RFC 6750): the token file's format, and the value of an Authorization header.

A token file holds one token per line; blank lines and `#` comments are skipped, so the file can
say whose token is which. A token must be RFC 6750's b64token (letters, digits, `-._~+/`, then
`=` padding): nothing else travels unchanged in an HTTP header and in gRPC metadata, so a token
outside it would be refused at every request; here it is refused once, when the file is read.
Messages name the line, never its text: the file is a secret. The server (server/auth.py) and
the command line's `--token-file` both read files with `read_tokens`.
"""

from __future__ import annotations

import re

from tfbig.protocol import BEARER_SCHEME
from tfbig.serving.errors import ServeConfigError

B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SHAPE = "letters, digits and -._~+/ (RFC 6750), e.g. a line of `openssl rand -hex 32`"


def parse_tokens(text: str, source: str) -> tuple[str, ...]:
    """The tokens in a token file's text; `source` names the file in errors."""
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not B64TOKEN.fullmatch(line):
            raise ServeConfigError(f"{source} line {number} is not a bearer token: use {_SHAPE}")
        tokens.append(line)
    return tuple(tokens)


def read_tokens(path: str, flag: str) -> tuple[str, ...]:
    """The tokens in the file at `path`; `flag` is the option that named it, for errors."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise ServeConfigError(f"{flag}: cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ServeConfigError(f"{flag}: {path} is not UTF-8 text") from None
    return parse_tokens(text, f"{flag} {path}")


def check_token(token: str) -> str:
    """A token a client was given, checked before it is sent (the error does not show it)."""
    if not isinstance(token, str) or not B64TOKEN.fullmatch(token):
        raise ServeConfigError(f"token is not a bearer token: use {_SHAPE}")
    return token


def authorization(token: str) -> str:
    """The Authorization header's (and gRPC metadata's) value that carries `token`."""
    return f"{BEARER_SCHEME} {check_token(token)}"


def bearer_token(value: str | None) -> str | None:
    """The token in an Authorization value; None when there is none, or another scheme (the
    scheme's name is case-insensitive, RFC 7235)."""
    scheme, _, token = (value or "").strip().partition(" ")
    if scheme.lower() != BEARER_SCHEME.lower():
        return None
    return token.strip() or None
