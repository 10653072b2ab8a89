"""Bearer tokens (--auth_token_file), TLS on REST, and mutual TLS on both protocols, over real
sockets on 127.0.0.1 with certificates made here; one server per kind, shared by the module."""

import asyncio
import logging
import os
import shutil
import time

import grpc
import numpy as np
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tfbig.cli import main
from tfbig.lifecycle import ModelRegistry
from tfbig.protocol import TOKEN_ENV
from tfbig.serving import AsyncClient, Client, Credentials, EmbeddedServer, ServeConfigError, ServingError
from tfbig.serving import parse_serve_args
from tfbig.serving.model_server import model_server_command
from tfbig.serving.serve import uses_model_server
from tfbig.serving.server import auth

from certs import make_pki, write_ssl_config
from readme import readme_block, run_block
from serving_models import free_port, save_two_inputs

TOKENS = ["alpha-0123456789", "beta/token+x=="]
METRICS_PATH = "/monitoring/prometheus/metrics"
PAIR = {"x": np.array([[1.0, 2.0]], np.float32), "tag": np.array([b"a"], dtype=object)}


@pytest.fixture(scope="module")
def pki():
    return make_pki()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth") / "pair"
    save_two_inputs(root)
    return str(root)


def write_tokens(path, lines) -> None:
    """Atomically, as a deployment rolls a secret (a new inode each time)."""
    temporary = f"{path}.new"
    with open(temporary, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(temporary, path)


def serve(base, *flags) -> EmbeddedServer:
    """The embedded server on free ports, serving `base` as model `pair` (or what flags name)."""
    models = [] if any(f.startswith("--model_config_file") for f in flags) else [
        "--model_name=pair", f"--model_base_path={base}"]
    return EmbeddedServer.from_options(parse_serve_args([
        "--host=127.0.0.1", "--port=0", f"--rest_api_port={free_port()}", *models,
        "--file_system_poll_wait_seconds=0", *flags])).start()


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tokens") / "tokens.txt")
    write_tokens(path, ["# ops team", f"  {TOKENS[0]}  ", "", TOKENS[1]])
    return path


@pytest.fixture(scope="module")
def server(base, pki, token_file, tmp_path_factory):
    """Tokens, and TLS (no client certificates) on both ports; the token file is looked at
    every 50 ms rather than every second, so a change shows within a test's patience."""
    ssl_config = write_ssl_config(tmp_path_factory.mktemp("tls"), pki.server)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(auth, "CHECK_EVERY_S", 0.05)
        srv = serve(base, f"--auth_token_file={token_file}", f"--ssl_config_file={ssl_config}",
                    f"--prometheus_path={METRICS_PATH}", "--enable_grpc_healthcheck_service")
        yield srv
        srv.stop()


@pytest.fixture(scope="module")
def mtls_server(base, pki, tmp_path_factory):
    ssl_config = write_ssl_config(tmp_path_factory.mktemp("mtls"), pki.server, custom_ca=pki.ca,
                                  client_verify=True)
    srv = serve(base, f"--ssl_config_file={ssl_config}")
    yield srv
    srv.stop()


def target(srv, protocol) -> str:
    return f"127.0.0.1:{srv.grpc_port if protocol == 'grpc' else srv.rest_port}"


def call(srv, protocol, kind="sync", **kwargs):
    """One predict through Client or AsyncClient; returns the outputs or raises ServingError."""
    kwargs = {"max_retries": 0, "timeout": 10, **kwargs}
    if kind == "sync":
        with Client(target(srv, protocol), protocol=protocol, **kwargs) as client:
            return client.predict("pair", PAIR)

    async def run():
        async with AsyncClient(target(srv, protocol), protocol=protocol, **kwargs) as client:
            return await client.predict("pair", PAIR)
    return asyncio.run(run())


@pytest.fixture(scope="module")
def ca_file(pki, tmp_path_factory):
    """The CA as a file: for requests' verify= and `tfbig predict --ca-cert`."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_bytes(pki.ca)
    return str(path)


def https(srv, path, ca_file, **kwargs) -> requests.Response:
    """A raw GET over REST, the server verified against the test CA."""
    return requests.get(f"https://127.0.0.1:{srv.rest_port}{path}", verify=ca_file, timeout=10, **kwargs)


# --- tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_token_from_the_file_is_accepted_a_missing_or_wrong_one_refused(server, pki, protocol, kind):
    for token in TOKENS:
        outputs = call(server, protocol, kind, token=token, root_certificates=pki.ca)
        assert outputs["total"].tolist() == [3.0]
    for token, words in ((None, "requires a bearer token"), ("gamma-wrong", "not accepted"),
                         (TOKENS[0] + "x", "not accepted"), (TOKENS[0][:-1], "not accepted")):
        with pytest.raises(ServingError) as refused:
            call(server, protocol, kind, token=token, root_certificates=pki.ca)
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED and words in refused.value.message


def test_rest_refusals_are_401_with_tf_servings_error_body_and_a_bearer_challenge(server, ca_file):
    missing = https(server, "/v1/models/pair", ca_file)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert set(missing.json()) == {"error"} and "bearer token" in missing.json()["error"]
    for value in (f"Bearer {TOKENS[0]}0", f"Basic {TOKENS[0]}", TOKENS[0], "Bearer", "Bearer \u00e9t\u00e9"):
        response = https(server, "/v1/models/pair", ca_file, headers={"Authorization": value.encode()})
        assert response.status_code == 401 and set(response.json()) == {"error"}
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert https(server, "/v1/models/pair:predict", ca_file).status_code == 401  # POST routes too
    good = https(server, "/v1/models/pair", ca_file, headers={"authorization": f"bearer {TOKENS[1]}"})
    assert good.status_code == 200 and good.json()["model_version_status"][0]["state"] == "AVAILABLE"


def test_health_readiness_and_metrics_stay_open(server, pki, ca_file):
    for path in ("/healthz", "/readyz", METRICS_PATH):
        assert https(server, path, ca_file).status_code == 200, path
    credentials = grpc.ssl_channel_credentials(pki.ca)
    with grpc.secure_channel(target(server, "grpc"), credentials) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_tokens_appear_in_no_log_and_no_metric(server, pki, ca_file, caplog):
    wrong = "secret-wrong-token-42"
    with caplog.at_level(logging.DEBUG):
        for protocol in ("grpc", "rest"):
            call(server, protocol, token=TOKENS[0], root_certificates=pki.ca)
            with pytest.raises(ServingError):
                call(server, protocol, token=wrong, root_certificates=pki.ca)
    page = https(server, METRICS_PATH, ca_file).text
    for secret in (*TOKENS, wrong):
        assert secret not in caplog.text and secret not in page
    refusals = {line.split("{")[1].split("}")[0]: int(line.rsplit(" ", 1)[1])
                for line in page.splitlines() if line.startswith(":tfbig:serving:auth_refusals{")}
    assert refusals['entrypoint="GRPC",reason="invalid"'] >= 1
    assert refusals['entrypoint="REST",reason="invalid"'] >= 1


def accepted(srv, pki, token) -> bool:
    try:
        call(srv, "grpc", token=token, root_certificates=pki.ca)
        return True
    except ServingError as error:
        assert error.code == grpc.StatusCode.UNAUTHENTICATED
        return False


def wait_until(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "the server did not pick up the token file's change"
        time.sleep(0.05)


def test_the_token_file_is_read_again_when_it_changes_and_kept_when_it_breaks(server, pki, token_file, caplog):
    new = "gamma-rotated-token"
    looked_again = 4 * auth.CHECK_EVERY_S  # (the fixture's 50 ms) time for several looks at the file
    try:
        write_tokens(token_file, [new])
        wait_until(lambda: accepted(server, pki, new))
        assert not accepted(server, pki, TOKENS[0])  # revoked without a restart
        with caplog.at_level(logging.WARNING, logger="tfbig.serving"):
            os.remove(token_file)  # vanished: the tokens read last stay, and one warning says so
            for _ in range(3):
                time.sleep(looked_again)
                assert accepted(server, pki, new)
            write_tokens(token_file, ["not a token!"])  # malformed: the same, told once more
            for _ in range(3):
                time.sleep(looked_again)
                assert accepted(server, pki, new)
        warnings = [r.getMessage() for r in caplog.records if "--auth_token_file" in r.getMessage()]
        assert len(warnings) == 2, warnings
        assert "--auth_token_file" in warnings[0] and "No such file" in warnings[0]
        assert "keeping the 1 tokens" in warnings[0]
        assert "line 1 is not a bearer token" in warnings[1] and "not a token" not in warnings[1]
        write_tokens(token_file, ["# every token revoked"])  # no token at all: everything is refused
        wait_until(lambda: not accepted(server, pki, new))
    finally:
        write_tokens(token_file, TOKENS)
        wait_until(lambda: accepted(server, pki, TOKENS[0]))


def test_a_bad_token_file_is_one_clear_line_before_any_port_opens(base, tmp_path):
    def start(path):
        with pytest.raises(ServeConfigError) as error:
            serve(base, f"--auth_token_file={path}")
        return str(error.value)

    missing = start(tmp_path / "none.txt")
    assert missing.startswith(f"--auth_token_file: cannot read {tmp_path}/none.txt: No such file")
    bad = tmp_path / "bad.txt"
    bad.write_text("# comment\ngood-token\nhunter2 with spaces\n")
    message = start(bad)
    assert "line 3 is not a bearer token" in message and "hunter2" not in message


# --- TLS -------------------------------------------------------------------------------------


def test_rest_speaks_tls_with_the_grpc_ports_certificate(server, pki):
    with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP gets no answer
        requests.get(f"http://127.0.0.1:{server.rest_port}/healthz", timeout=10)
    with pytest.raises(requests.exceptions.SSLError):  # an unknown authority is not trusted
        requests.get(f"https://127.0.0.1:{server.rest_port}/healthz", timeout=10)
    with pytest.raises(ServingError) as plain:
        call(server, "rest", token=TOKENS[0])  # http://, not https://
    assert plain.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_mutual_tls_takes_a_client_certificate_signed_by_the_ca_and_no_other(mtls_server, pki, protocol, kind):
    signed = call(mtls_server, protocol, kind, root_certificates=pki.ca, private_key=pki.client.key,
                  certificate_chain=pki.client.cert)
    assert signed["total"].tolist() == [3.0]
    for certificate in ({}, {"private_key": pki.stranger.key, "certificate_chain": pki.stranger.cert}):
        with pytest.raises(ServingError) as refused:
            call(mtls_server, protocol, kind, root_certificates=pki.ca, timeout=5, **certificate)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE  # no handshake, no request


def test_bad_tls_configs_and_client_arguments_are_clear_errors(base, pki, tmp_path):
    no_ca = write_ssl_config(tmp_path, pki.server, client_verify=True)
    with pytest.raises(ServeConfigError, match="client_verify needs custom_ca"):
        serve(base, f"--ssl_config_file={no_ca}")
    with pytest.raises(ValueError, match="private_key and certificate_chain together"):
        Client("127.0.0.1:1", private_key=pki.client.key)
    with pytest.raises(ValueError, match="not a bearer token") as bad:
        Client("127.0.0.1:1", token="two words")
    assert "two words" not in str(bad.value)


# --- tfbig serve with the binary, and the command line ---------------------------------------


def test_tensorflow_model_server_is_refused_auth_token_file_and_auto_serves_embedded(tmp_path, token_file):
    options = parse_serve_args(["--model_base_path=/m", f"--auth_token_file={token_file}",
                                "--engine=tensorflow_model_server"])
    with pytest.raises(ServeConfigError, match="tensorflow_model_server has no authentication"):
        model_server_command(options, str(tmp_path), "/bin/tms")
    assert uses_model_server(options, "/bin/tms")  # asked for: refused as above
    auto = parse_serve_args(["--model_base_path=/m", f"--auth_token_file={token_file}"])
    assert not uses_model_server(auto, "/bin/tms")  # auto: the embedded server, which checks tokens
    assert uses_model_server(parse_serve_args(["--model_base_path=/m"]), "/bin/tms")


def test_tfbig_predict_sends_the_token_file_or_the_environments_token(server, ca_file, tmp_path, capsys,
                                                                     monkeypatch):
    (tmp_path / "mine.txt").write_text(f"# mine\n{TOKENS[1]}\n")
    args = ["predict", target(server, "rest"), "pair", "--protocol=rest", f"--ca-cert={ca_file}",
            "--inputs", '{"x": [[1, 2]], "tag": ["a"]}']
    assert main([*args, f"--token-file={tmp_path}/mine.txt"]) == 0
    assert '"total":[3.0]' in capsys.readouterr().out.replace(" ", "")
    monkeypatch.setenv(TOKEN_ENV, TOKENS[0])
    assert main(args) == 0
    monkeypatch.setenv(TOKEN_ENV, "wrong-token")
    assert main(args) == 1
    assert "UNAUTHENTICATED: the bearer token is not accepted" in capsys.readouterr().err


def test_credentials_from_files(pki, tmp_path, monkeypatch):
    (tmp_path / "tokens").write_text("\n# comment\nfirst-token\nsecond-token\n")
    (tmp_path / "key.pem").write_bytes(pki.client.key)
    (tmp_path / "cert.pem").write_bytes(pki.client.cert)
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment")
    read = Credentials.from_files(token_file=str(tmp_path / "tokens"), client_cert=str(tmp_path / "cert.pem"),
                                  client_key=str(tmp_path / "key.pem"))
    assert read.token == "first-token" and read.certificate_chain == pki.client.cert
    assert Credentials.from_files().token == "from-the-environment"
    monkeypatch.setenv(TOKEN_ENV, "bad token")
    with pytest.raises(ServeConfigError, match=f"\\${TOKEN_ENV}: token is not a bearer token"):
        Credentials.from_files()
    with pytest.raises(ServeConfigError, match="--client-cert and --client-key together"):
        Credentials.from_files(client_cert=str(tmp_path / "cert.pem"))


def test_tfbig_models_promote_moves_labels_on_a_server_that_wants_a_token_and_tls(
        base, pki, ca_file, token_file, tmp_path, capsys):
    models = tmp_path / "pair"
    for version in ("7", "8"):  # two copies of the version save_two_inputs wrote
        shutil.copytree(os.path.join(base, "7"), models / version)
    registry = ModelRegistry(str(models), model_name="pair")
    for version in (7, 8):
        registry.record_validation(version, {"passed": True})
    registry.promote(7, "stable")
    ssl_config = write_ssl_config(tmp_path, pki.server)
    srv = serve(base, f"--model_config_file={registry.config_file}", f"--auth_token_file={token_file}",
                f"--ssl_config_file={ssl_config}")
    try:
        args = ["models", "promote", "8", f"--model-base-path={models}", "--model-name=pair",
                f"--server=127.0.0.1:{srv.grpc_port}", f"--ca-cert={ca_file}"]
        assert main(args) == 1  # no token: refused, the labels stay
        assert "UNAUTHENTICATED" in capsys.readouterr().err and registry.labels() == {"stable": 7}
        assert main([*args, f"--token-file={token_file}"]) == 0
        assert registry.labels() == {"stable": 8}
        with Client(f"127.0.0.1:{srv.grpc_port}", root_certificates=pki.ca, token=TOKENS[0]) as client:
            assert {s["version"]: s["state"] for s in client.status("pair")} == {8: "AVAILABLE", 7: "END"}
    finally:
        srv.stop()


def test_readme_example_sends_a_token_over_tls(server, ca_file, monkeypatch, capsys):
    monkeypatch.setenv(TOKEN_ENV, TOKENS[0])
    run_block(readme_block("over_grpc.status(", {
        "localhost:8500": target(server, "grpc"), "localhost:8501": target(server, "rest"),
        '"ca.pem"': repr(ca_file), '"digits"': '"pair"'}))
    assert capsys.readouterr().out.splitlines() == ["AVAILABLE AVAILABLE", "StatusCode.UNAUTHENTICATED 401"]
