"""TLS for both protocols, from PEM bytes: grpc credentials, and ssl contexts for REST.

TF Serving's SSLConfig (`--ssl_config_file`) carries its keys and certificates inline, and the
client takes them as bytes (as grpc does), so that one set of PEMs secures gRPC and REST alike.
Python's ssl module loads a certificate chain from files only: `_load_chain` writes it into a
private temporary directory for the moment of loading and deletes it again.
"""

from __future__ import annotations

import os
import ssl
import tempfile

import grpc

from tfbig.serving.errors import ServeConfigError


def _load_chain(context: ssl.SSLContext, certificate_chain: bytes, private_key: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="tfbig-tls-") as folder:  # mode 0700
        paths = []
        for name, data in (("chain.pem", certificate_chain), ("key.pem", private_key)):
            path = os.path.join(folder, name)
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(data)
            paths.append(path)
        context.load_cert_chain(*paths)


def check_ssl_config(ssl_config) -> None:
    """Refuse an SSLConfig that could not serve (before a port opens)."""
    if not ssl_config.server_key or not ssl_config.server_cert:
        raise ServeConfigError("--ssl_config_file: give both server_key and server_cert (PEM text)")
    if ssl_config.client_verify and not ssl_config.custom_ca:
        raise ServeConfigError("--ssl_config_file: client_verify needs custom_ca, the certificate "
                               "authority that signs the clients' certificates")


def grpc_server_credentials(ssl_config) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(ssl_config.server_key.encode(), ssl_config.server_cert.encode())],
        root_certificates=ssl_config.custom_ca.encode() or None,
        require_client_auth=ssl_config.client_verify)


def rest_server_context(ssl_config) -> ssl.SSLContext:
    """The REST listener's context: the gRPC port's certificate, and with client_verify the
    same mutual TLS (a client certificate signed by custom_ca, or no handshake)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        _load_chain(context, ssl_config.server_cert.encode(), ssl_config.server_key.encode())
        if ssl_config.client_verify:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=ssl_config.custom_ca)
    except ssl.SSLError as error:
        raise ServeConfigError(f"--ssl_config_file: its keys and certificates do not load: "
                               f"{error.reason or error}") from None
    return context


def client_context(root_certificates: bytes | None, private_key: bytes | None,
                   certificate_chain: bytes | None) -> ssl.SSLContext:
    """A REST client's context from the arguments grpc.ssl_channel_credentials takes: the
    server verified against `root_certificates` (else the system's authorities), and a client
    certificate when given."""
    try:
        context = ssl.create_default_context(
            cadata=root_certificates.decode() if root_certificates is not None else None)
        if certificate_chain is not None:
            _load_chain(context, certificate_chain, private_key)
    except ssl.SSLError as error:
        raise ServeConfigError(f"the client's certificates do not load: {error.reason or error}") from None
    return context
