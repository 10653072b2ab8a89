"""Certificates made in the test with the `cryptography` package: a CA, a server certificate
for localhost and 127.0.0.1, client certificates (one signed by the CA, one by a stranger),
and TF Serving's SSLConfig naming them."""

import dataclasses
import datetime
import ipaddress
import json
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclasses.dataclass(frozen=True)
class Pem:
    key: bytes
    cert: bytes


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(name: str, issuer: tuple | None, *, ca: bool = False, usage=None, hosts: bool = False):
    """A P-256 key and its certificate, signed by `issuer` (key, certificate) or by itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_key, signer = issuer or (key, None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(signer.subject if signer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    cert = builder.sign(signer_key, hashes.SHA256())
    return key, cert


def self_signed_server() -> Pem:
    """A certificate for localhost and 127.0.0.1 that is its own authority."""
    key, cert = _issue("localhost", None, ca=True, hosts=True)
    return Pem(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: bytes  # the CA's certificate: trusted by the clients, and by the server for clients
    server: Pem
    client: Pem  # signed by the CA
    stranger: Pem  # a client certificate signed by another CA


def make_pki() -> Pki:
    ca_key, ca_cert = _issue("tfbig test CA", None, ca=True)
    other_key, other_cert = _issue("another CA", None, ca=True)

    def leaf(name, issuer, usage, hosts=False) -> Pem:
        key, cert = _issue(name, issuer, usage=usage, hosts=hosts)
        return Pem(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))

    return Pki(ca=ca_cert.public_bytes(serialization.Encoding.PEM),
               server=leaf("localhost", (ca_key, ca_cert), ExtendedKeyUsageOID.SERVER_AUTH, hosts=True),
               client=leaf("client", (ca_key, ca_cert), ExtendedKeyUsageOID.CLIENT_AUTH),
               stranger=leaf("stranger", (other_key, other_cert), ExtendedKeyUsageOID.CLIENT_AUTH))


def write_ssl_config(folder, server: Pem, *, custom_ca: bytes | None = None, client_verify: bool = False) -> str:
    """TF Serving's SSLConfig text proto, the PEMs inline; returns its path."""
    lines = [f"server_key: {json.dumps(server.key.decode())}", f"server_cert: {json.dumps(server.cert.decode())}"]
    if custom_ca is not None:
        lines.append(f"custom_ca: {json.dumps(custom_ca.decode())}")
    if client_verify:
        lines.append("client_verify: true")
    path = os.path.join(str(folder), "ssl-mtls.config" if client_verify else "ssl.config")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
