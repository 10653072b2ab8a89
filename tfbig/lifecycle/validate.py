"""Validate a version before it may be promoted, in the manner of TFX's InfraValidator.

Three checks, each against a failure the tests reproduce:
1. the files match the version's manifest (a half-copied or edited version),
   and, given a verify key, the manifest is signed by it (tfbig.export.signing);
2. a real server loads it and replays its warmup requests (`tfbig serve`,
   i.e. tensorflow_model_server when installed, in a sandbox process that
   serves only this version);
3. the server's answers over gRPC match what the trained model answered in
   memory at export time (`assets.extra/tfbig_expected_responses`), within
   the SavedModel parity bound, for every signature.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

from tensorflow_serving.config import model_server_config_pb2

from tfbig.export.errors import ParityError
from tfbig.export.manifest import verify_manifest
from tfbig.export.parity import check_parity
from tfbig.export.signing import signature_problem
from tfbig.export.warmup import EXPECTED_FILE, read_warmup
from tfbig.lifecycle.registry import ModelRegistry
from tfbig.serving import codec
from tfbig.serving.client import Client
from tfbig.serving.config_files import write_text_proto
from tfbig.serving.errors import ServerStartError, ServingError
from tfbig.serving.process import ServerProcess


@dataclasses.dataclass(frozen=True)
class Validation:
    version: int
    passed: bool
    engine: str
    problems: tuple[str, ...]
    checks: tuple[dict, ...]  # one per signature output compared
    load_seconds: float
    note: str = ""

    def as_record(self) -> dict:
        return dataclasses.asdict(self)


def validate_version(registry: ModelRegistry, version: int, *, engine: str = "auto",
                     log_path: str | None = None, verify_key=None) -> Validation:
    """Run the three checks on `version` and record the result in the registry; with
    `verify_key` (an Ed25519PublicKey) an unsigned or wrongly signed version fails."""
    result = _validate(registry, version, engine=engine, log_path=log_path, verify_key=verify_key)
    registry.record_validation(version, result.as_record())
    return result


def _validate(registry: ModelRegistry, version: int, *, engine: str, log_path: str | None,
              verify_key) -> Validation:
    path = registry.version_path(version)
    problems = []
    if verify_key is not None and (unsigned := signature_problem(path, verify_key)):
        problems.append(f"not signed by the verify key: {unsigned}")
    differ = verify_manifest(path)
    if differ:
        problems.append(f"files differ from the manifest: {'; '.join(differ)}")
    if problems:
        return Validation(version, False, engine, tuple(problems), (), 0.0)
    with tempfile.TemporaryDirectory(prefix="tfbig-validate-") as sandbox:
        config_file = write_text_proto(_single_version_config(registry, version),
                                       os.path.join(sandbox, "models.config"))
        server = ServerProcess(
            [f"--model_config_file={config_file}", "--file_system_poll_wait_seconds=0"],
            model_name=registry.model_name, engine=engine,
            log_path=log_path or os.path.join(sandbox, "serve.log"))
        started = time.perf_counter()
        try:
            server.start()
        except ServerStartError as error:
            return Validation(version, False, engine,
                              (f"the server could not load version {version}: {error}",), (),
                              time.perf_counter() - started)
        load_seconds = time.perf_counter() - started
        try:
            checks, problems, note = _compare_responses(server.grpc_target, registry.model_name,
                                                        version, path)
        finally:
            server.stop()
    return Validation(version, not problems, engine, tuple(problems), tuple(checks),
                      load_seconds, note)


def _single_version_config(registry: ModelRegistry, version: int):
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = registry.model_name
    model.base_path = registry.base_path
    model.model_platform = "tensorflow"
    model.model_version_policy.specific.versions.append(version)
    return config


def _compare_responses(target: str, model: str, version: int, path: str):
    """Send each recorded request; compare every output with the recorded response."""
    expected_path = os.path.join(path, EXPECTED_FILE)
    if not os.path.exists(expected_path):
        return [], [], "no recorded responses (not exported by tfbig): load and warmup only"
    checks, problems = [], []
    with Client(target, timeout=120.0) as client:
        for log in read_warmup(expected_path):
            request, response = log.predict_log.request, log.predict_log.response
            signature = request.model_spec.signature_name
            inputs = {name: codec.from_tensor_proto(proto) for name, proto in request.inputs.items()}
            try:
                outputs = client.predict(model, inputs, signature=signature, version=version)
            except ServingError as error:
                problems.append(f"signature {signature!r}: the server answered {error}")
                continue
            for name, proto in response.outputs.items():
                artifact = f"served signature {signature!r} output {name!r}"
                if name not in outputs:
                    problems.append(f"{artifact}: missing from the server's answer")
                    continue
                try:
                    report = check_parity(artifact, outputs[name], codec.from_tensor_proto(proto),
                                          kind="saved_model")
                except ParityError as error:
                    problems.append(str(error))
                    continue
                checks.append({"signature": signature, "output": name, **report})
    return checks, problems, ""
