"""Signed versions: an Ed25519 signature over a version's manifest.

The manifest (`assets.extra/tfbig_manifest.json`) holds the sha256 of every
other file of the version, so one signature over the manifest's bytes vouches
for all of them: an edited file no longer matches its digest, an edited
manifest no longer matches the signature. The signature is
`assets.extra/tfbig_manifest.sig`, the one file the manifest cannot list, as
JSON: `{"algorithm": "ed25519", "key_id": ..., "signature": BASE64}`. Its
`key_id` (the first 16 hex digits of the sha256 of the raw public key) is not
trusted, only shown, so that a refusal can say which key signed.

Ed25519 because its keys and signatures are small (32 and 64 bytes), signing
is deterministic (no per-signature random number to get wrong) and checking
takes microseconds, so a server can check every version it loads. Keys are
PEM files (PKCS#8 private, SubjectPublicKeyInfo public) that `openssl` reads
too: `tfbig keys generate --output DIR` makes a pair. The private key stays
where versions are exported; servers get only the public one
(`tfbig serve --verify_key`, `tfbig models verify --verify-key`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tfbig.errors import UsageError
from tfbig.export.manifest import MANIFEST_FILE, SIGNATURE_FILE
from tfbig.files import write_atomic

ALGORITHM = "ed25519"
PRIVATE_KEY_FILE = "signing_key.pem"
PUBLIC_KEY_FILE = "signing_key.pub.pem"


class SigningError(UsageError, ValueError):
    """A key file is missing, unreadable or not an Ed25519 key of the kind asked for."""


def generate_key_pair(directory: str) -> tuple[str, str]:
    """Write a new private key (mode 0600) and its public key into `directory`; their paths.

    Refuses to replace existing key files: versions signed with the old key
    would no longer verify against the new one.
    """
    private_path = os.path.join(directory, PRIVATE_KEY_FILE)
    public_path = os.path.join(directory, PUBLIC_KEY_FILE)
    existing = [path for path in (private_path, public_path) if os.path.exists(path)]
    if existing:
        raise SigningError(f"{existing[0]} already exists; versions signed with it would no "
                           f"longer verify against a new key: choose another --output directory")
    os.makedirs(directory, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    write_atomic(private_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), mode=0o600)
    write_atomic(public_path, public_pem(key))
    return private_path, public_path


def public_pem(private_key: Ed25519PrivateKey) -> bytes:
    """The PEM file a server is given (--verify_key) for versions `private_key` signs."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _read_key_file(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise SigningError(f"{flag} {path}: cannot read it: {error.strerror}") from None


def load_private_key(path: str, flag: str = "--sign-key") -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file `path`; `flag` names it in errors."""
    data = _read_key_file(path, flag)
    if b"PUBLIC KEY" in data:
        raise SigningError(f"{flag} {path}: a public key; signing needs the private key "
                           f"({PRIVATE_KEY_FILE} beside it)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise SigningError(f"{flag} {path}: not an unencrypted PEM private key: "
                           f"{str(error).splitlines()[0]}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{flag} {path}: not an Ed25519 key ({type(key).__name__}); tfbig signs "
                           f"with Ed25519: make a key with `tfbig keys generate --output DIR`")
    return key


def load_public_key(path: str, flag: str = "--verify-key") -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file `path`; `flag` names it in errors."""
    data = _read_key_file(path, flag)
    if b"PRIVATE KEY" in data:  # never ask servers to hold the signing key
        raise SigningError(f"{flag} {path}: a private key; give servers the public key "
                           f"({PUBLIC_KEY_FILE} beside it) and keep the private one where you export")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as error:
        raise SigningError(f"{flag} {path}: not a PEM public key: "
                           f"{str(error).splitlines()[0]}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{flag} {path}: not an Ed25519 key ({type(key).__name__}); tfbig "
                           f"versions are signed with Ed25519")
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_version(export_dir: str, private_key: Ed25519PrivateKey) -> str:
    """Sign the manifest of `export_dir` (written last, once every file is in place)."""
    with open(os.path.join(export_dir, MANIFEST_FILE), "rb") as f:
        signature = private_key.sign(f.read())
    record = {"algorithm": ALGORITHM, "key_id": key_id(private_key.public_key()),
              "signature": base64.b64encode(signature).decode("ascii")}
    return write_atomic(os.path.join(export_dir, SIGNATURE_FILE), json.dumps(record, indent=2) + "\n")


def signature_problem(export_dir: str, public_key: Ed25519PublicKey) -> str | None:
    """Why the manifest of `export_dir` is not signed by `public_key`; None when it is.

    Only the manifest is checked here: that the files match it is
    `verify_manifest`'s job, and a verifier needs both.
    """
    try:
        with open(os.path.join(export_dir, MANIFEST_FILE), "rb") as f:
            manifest = f.read()
    except FileNotFoundError:
        return f"unsigned: it has no {MANIFEST_FILE} (not exported by tfbig)"
    try:
        with open(os.path.join(export_dir, SIGNATURE_FILE), encoding="utf-8") as f:
            record = json.load(f)
        algorithm, signer = record["algorithm"], record.get("key_id", "?")
        signature = base64.b64decode(record["signature"], validate=True)
    except FileNotFoundError:
        return f"unsigned: it has no {SIGNATURE_FILE} (export it with --sign-key)"
    except (ValueError, KeyError, TypeError) as error:
        return f"{SIGNATURE_FILE} is not a tfbig signature ({type(error).__name__}: {error})"
    if algorithm != ALGORITHM:
        return f"{SIGNATURE_FILE} uses {algorithm!r}; tfbig verifies {ALGORITHM!r} only"
    try:
        public_key.verify(signature, manifest)
    except InvalidSignature:
        expected = key_id(public_key)
        if signer != expected:
            return f"signed by key {signer}, not by the verify key {expected}"
        return f"the signature does not match {MANIFEST_FILE}: it was changed after signing"
    return None
