"""Signed versions: sign at export, refuse what the verify key did not sign, on disk and in a
real embedded server; and the lifecycle's audit trail.

One tiny MLP run (conftest's `tiny_run`) is exported once, signed; every other version is a
copy of it changed the way an attacker or a broken copy would change it.
"""

import json
import os
import shutil

import grpc
import numpy as np
import pytest

from tfbig.cli import main
from tfbig.export.manifest import MANIFEST_FILE, SIGNATURE_FILE, verify_manifest
from tfbig.export.signing import (
    SigningError, generate_key_pair, key_id, load_private_key, load_public_key, sign_version,
    signature_problem,
)
from tfbig.lifecycle import ModelRegistry
from tfbig.serving.errors import ServeConfigError

from serving_models import free_port, model_config_text, start_server

VARIABLES = os.path.join("variables", "variables.data-00000-of-00001")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two key pairs: `signing` signs the exports, `other` is somebody else's."""
    root = tmp_path_factory.mktemp("keys")
    return {name: generate_key_pair(str(root / name)) for name in ("signing", "other")}


@pytest.fixture(scope="module")
def signed_export(tiny_run, keys, tmp_path_factory):
    """Version 1 of a model base path, exported by `tfbig export --sign-key`."""
    base = tmp_path_factory.mktemp("signed") / "models" / "tiny"
    assert main(["export", str(tiny_run), "--model-base-path", str(base),
                 "--sign-key", keys["signing"][0]]) == 0
    return str(base / "1")


def _flip_byte(path, offset=-1):
    with open(path, "r+b") as f:
        f.seek(offset, os.SEEK_END)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def _variables_and_manifest(path):
    """The attack a digest alone cannot catch: change a file, then write its new digest
    into the manifest."""
    from tfbig.export.manifest import file_digests

    _flip_byte(os.path.join(path, VARIABLES))
    manifest_path = os.path.join(path, MANIFEST_FILE)
    with open(manifest_path) as f:
        manifest = json.load(f)
    manifest["files"][VARIABLES] = file_digests(path)[VARIABLES]
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2)


def _resigned(keys):
    return lambda path: sign_version(path, load_private_key(keys["other"][0]))


TAMPERINGS = {
    "variables": lambda path: _flip_byte(os.path.join(path, VARIABLES)),
    "saved_model_pb": lambda path: _flip_byte(os.path.join(path, "saved_model.pb"), -10),
    "manifest": _variables_and_manifest,
    "unsigned": lambda path: os.remove(os.path.join(path, SIGNATURE_FILE)),
}
# What the refusal says, for each way of changing a signed version.
REFUSALS = {
    "variables": f"{VARIABLES}: sha256 differs",
    "saved_model_pb": "saved_model.pb: sha256 differs",
    "manifest": "the signature does not match",
    "unsigned": "unsigned",
    "wrong_key": "signed by key",
}


def _copy(signed_export, tmp_path, version, change=None):
    path = os.path.join(str(tmp_path), "models", "tiny", str(version))
    shutil.copytree(signed_export, path)
    if change is not None:
        change(path)
    return path


def _problems(path, public_key):
    problem = signature_problem(path, public_key)
    return ([problem] if problem else []) + verify_manifest(path)


# --- keys ---------------------------------------------------------------------------


def test_generated_keys_load_and_the_private_one_is_private(keys):
    private, public = keys["signing"]
    assert os.stat(private).st_mode & 0o777 == 0o600
    assert key_id(load_private_key(private).public_key()) == key_id(load_public_key(public))
    assert key_id(load_public_key(public)) != key_id(load_public_key(keys["other"][1]))


def test_key_files_of_the_wrong_kind_are_one_clear_error(keys, tmp_path):
    private, public = keys["signing"]
    with pytest.raises(SigningError, match="a private key; give servers the public key"):
        load_public_key(private)
    with pytest.raises(SigningError, match="a public key; signing needs the private key"):
        load_private_key(public)
    with pytest.raises(SigningError, match="cannot read it: No such file"):
        load_public_key(str(tmp_path / "missing.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    with pytest.raises(SigningError, match="not a PEM public key"):
        load_public_key(str(garbage))
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = tmp_path / "ec.pem"
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(SigningError, match=r"not an Ed25519 key \(ECPublicKey\)"):
        load_public_key(str(other))
    with pytest.raises(SigningError, match="already exists"):
        generate_key_pair(os.path.dirname(private))


def test_keys_generate_command(tmp_path, capsys):
    assert main(["keys", "generate", "--output", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    assert "signing_key.pem" in out and "--verify_key" in out
    assert main(["keys", "generate", "--output", str(tmp_path / "k")]) == 2
    assert "already exists" in capsys.readouterr().err


# --- verifying on disk -------------------------------------------------------------


@pytest.mark.slow
def test_signed_export_verifies_and_every_tampering_is_refused(signed_export, keys, tmp_path):
    public = load_public_key(keys["signing"][1])
    assert _problems(signed_export, public) == []
    with open(os.path.join(signed_export, SIGNATURE_FILE)) as f:
        assert json.load(f)["key_id"] == key_id(public)
    changes = {**TAMPERINGS, "wrong_key": _resigned(keys)}
    for version, (name, change) in enumerate(changes.items(), start=2):
        problems = _problems(_copy(signed_export, tmp_path, version, change), public)
        assert any(REFUSALS[name] in p for p in problems), (name, problems)
    # Without a key, an unsigned version is served as before; a tampered one never is.
    unsigned = _copy(signed_export, tmp_path, 10, TAMPERINGS["unsigned"])
    assert verify_manifest(unsigned) == []
    assert verify_manifest(_copy(signed_export, tmp_path, 11, TAMPERINGS["variables"])) != []


@pytest.mark.slow
def test_models_verify_refuses_unsigned_and_tampered_versions(signed_export, keys, tmp_path, capsys):
    public = keys["signing"][1]
    _copy(signed_export, tmp_path, 1)
    _copy(signed_export, tmp_path, 2, TAMPERINGS["unsigned"])
    _copy(signed_export, tmp_path, 3, TAMPERINGS["manifest"])
    base = str(tmp_path / "models" / "tiny")
    for version, refusal in ((2, REFUSALS["unsigned"]), (3, REFUSALS["manifest"])):
        assert main(["models", "verify", str(version), "--model-base-path", base,
                     "--verify-key", public, "--engine", "embedded"]) == 1
        out = capsys.readouterr().out
        assert f"version {version} FAILED" in out and "not signed by the verify key" in out
        assert refusal in out
    assert main(["models", "verify", "1", "--model-base-path", base, "--verify-key", public,
                 "--engine", "embedded"]) == 0
    assert "version 1 passed" in capsys.readouterr().out
    assert main(["models", "verify", "1", "--model-base-path", base, "--verify-key", keys["signing"][0]]) == 2
    assert "a private key" in capsys.readouterr().err


# --- serving --------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_server_never_loads_a_refused_version(signed_export, keys, tmp_path):
    """Version 1 is intact, 2-6 are changed; with the verify key only 1 serves, and each of
    the others is END with a status that says why. Without the key, the unsigned one serves."""
    from tfbig.serving.client import Client

    changes = {**TAMPERINGS, "wrong_key": _resigned(keys)}
    names = {version: name for version, name in enumerate(changes, start=2)}
    _copy(signed_export, tmp_path, 1)
    for version, name in names.items():
        _copy(signed_export, tmp_path, version, changes[name])
    base = str(tmp_path / "models" / "tiny")
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"tiny": base}).replace(
        'model_platform: "tensorflow"', 'model_platform: "tensorflow" model_version_policy { all {} }'))
    server = start_server(config, f"--verify_key={keys['signing'][1]}")
    try:
        for protocol, port in (("grpc", server.grpc_port), ("rest", server.rest_port)):
            with Client(f"127.0.0.1:{port}", protocol=protocol) as client:
                states = {s["version"]: s for s in client.status("tiny")}
                assert states[1]["state"] == "AVAILABLE"
                for version, name in names.items():
                    assert states[version]["state"] == "END", name
                    assert REFUSALS[name] in states[version]["error_message"], name
                    # Damaged files are DATA_LOSS; a manifest the key did not sign, PERMISSION_DENIED.
                    damaged = name in ("variables", "saved_model_pb")
                    code = grpc.StatusCode.DATA_LOSS if damaged else grpc.StatusCode.PERMISSION_DENIED
                    assert states[version]["error_code"] == code.value[0], name
                    with pytest.raises(Exception, match="Servable not found"):
                        client.predict("tiny", {"inputs": np.zeros((1, 8, 8), np.float32)}, version=version)
                assert client.predict("tiny", {"inputs": np.zeros((1, 8, 8), np.float32)}, version=1)["logits"].shape == (1, 10)
    finally:
        server.stop()
    # No key: the unsigned version loads; the tampered ones still do not.
    server = start_server(config)
    try:
        with Client(f"127.0.0.1:{server.grpc_port}") as client:
            states = {s["version"]: s["state"] for s in client.status("tiny")}
        assert states[5] == "AVAILABLE" and states[6] == "AVAILABLE"  # unsigned, other key
        assert states[2] == states[3] == "END"
    finally:
        server.stop()


def test_verify_key_with_tensorflow_model_server_is_refused(keys, tmp_path):
    """The binary cannot check signatures: its command is never made, and auto picks the
    embedded server even where the binary is installed."""
    from tfbig.serving.model_server import model_server_command
    from tfbig.serving.options import parse_serve_args
    from tfbig.serving.serve import uses_model_server

    flags = ["--model_base_path=/models/tiny", f"--verify_key={keys['signing'][1]}"]
    options = parse_serve_args(flags + ["--engine=tensorflow_model_server"])
    with pytest.raises(ServeConfigError, match="--verify_key: tensorflow_model_server cannot check"):
        model_server_command(options, str(tmp_path), "/usr/bin/tensorflow_model_server")
    assert not uses_model_server(parse_serve_args(flags), "/usr/bin/tensorflow_model_server")
    assert uses_model_server(parse_serve_args(flags[:1]), "/usr/bin/tensorflow_model_server")


def test_serve_with_a_bad_verify_key_is_one_line(keys, tmp_path, capsys):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    assert main(["serve", "--engine=embedded", f"--port={free_port()}",
                 f"--model_base_path={tmp_path / 'models' / 'tiny'}",
                 f"--verify_key={keys['signing'][0]}"]) == 2
    assert "--verify_key" in capsys.readouterr().err


# --- audit trail -------------------------------------------------------------------


def test_label_moves_are_recorded_with_user_and_host(tmp_path, capsys):
    """Labels only name directories, so two directories are versions enough here."""
    import getpass
    import socket

    base = str(tmp_path / "models" / "tiny")
    for version in (1, 2, 3):
        os.makedirs(os.path.join(base, str(version)))
    registry = ModelRegistry(base)
    for version in (1, 2):
        registry.record_validation(version, {"passed": True})
    registry.promote(1, "stable")
    registry.promote(2, "stable")
    registry.rollback("stable")
    registry.prune_old(1)
    events = ModelRegistry(base).history()
    moves = [(e["action"], e.get("label"), e.get("version"), e.get("previous")) for e in events]
    assert moves == [("promote", "stable", 1, None), ("promote", "stable", 2, 1),
                     ("rollback", "stable", 1, 2), ("prune-old", None, None, None)]
    assert events[-1]["removed"] == [2]  # 1 is stable, 3 the newest
    who = (getpass.getuser(), socket.gethostname())
    assert {(e["user"], e["host"]) for e in events} == {who}
    assert (registry.record()["validations"]["1"]["user"], registry.record()["validations"]["1"]["host"]) == who
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)
    assert main(["models", "history", "--model-base-path", base]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(events) and "rollback" in lines[-2] and "prune-old" in lines[-1]
    assert f"{getpass.getuser()}@{socket.gethostname()}" in lines[-1]

