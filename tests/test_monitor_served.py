"""`tfbig monitor` on real served traffic: an exported digits CNN behind the embedded server with
request logging, sent held-out digits (the data set's eval split), inverted digits (1 - x), and
the one after the other for drift; the logs are read back from real files after the server drains.
Also the Prometheus alert rules in serving/, checked against the metric names that really exist.
"""

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tfbig.cli import main
from tfbig.data import load_data
from tfbig.serving import Client

from runs import GPT, make_config
from serving_models import DIGITS_CNN, export_digits, export_gpt, start_server

pytestmark = pytest.mark.slow

SERVING_DIR = Path(__file__).resolve().parent.parent / "serving"
BATCH = 20
FAILED = 2  # requests of the wrong shape sent to held_out


def eval_rows(config) -> np.ndarray:
    """A data set's eval split, as the exported version's reference saw it."""
    source = load_data(config.data)
    dataset = source.eval.make_dataset(batch_size=10_000, shuffle=False, seed=0, repeat=False,
                                       drop_remainder=False)
    return next(iter(dataset))[0].numpy()


def send(port: int, model: str, images: np.ndarray, **call) -> None:
    with Client(f"127.0.0.1:{port}") as client:
        for start in range(0, len(images), BATCH):
            client.predict(model, images[start:start + BATCH], **call)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Logs of three models served from one base path: held_out, shifted, and mixed (held-out
    digits, then inverted ones), with the times between which each burst was sent."""
    root = tmp_path_factory.mktemp("monitor")
    base = root / "digits"
    export_digits(root / "run", base)
    images = eval_rows(make_config(root / "data", model=DIGITS_CNN, data={"name": "digits"}))
    entries = "".join(f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" '
                      f'version_labels {{ key: "stable" value: 1 }} }}\n'
                      for name in ("held_out", "shifted", "mixed"))
    config = root / "models.config"
    config.write_text(f"model_config_list {{\n{entries}}}\n")
    logs = root / "logs"
    server = start_server(config, f"--request_log_dir={logs}")
    try:
        send(server.grpc_port, "held_out", images, label="stable")
        with Client(f"127.0.0.1:{server.grpc_port}") as client:
            for _ in range(FAILED):
                with pytest.raises(Exception):
                    client.predict("held_out", np.zeros((2, 3), np.float32))
        send(server.grpc_port, "shifted", 1.0 - images)
        start = time.time()
        send(server.grpc_port, "mixed", images)
        time.sleep(0.05)
        boundary = time.time()
        time.sleep(0.05)
        send(server.grpc_port, "mixed", 1.0 - images)
        end = time.time()
    finally:
        server.stop()  # drains the log: every record is in a closed file now
    return {"root": root, "base": base, "logs": logs, "rows": len(images), "requests": -(-len(images) // BATCH),
            "mixed": (start, boundary, end), "metrics": server.metrics.exposition().decode()}


def run_monitor(served, name: str, *extra) -> tuple[int, dict, Path]:
    out = served["root"] / f"out-{name}-{len(extra)}"
    code = main(["monitor", "--model-base-path", str(served["base"]), "--log-dir", str(served["logs"]),
                 "--model-name", name, "--output", str(out), *extra])
    return code, json.loads((out / "monitor.json").read_text()), out


def statuses(part: dict) -> dict:
    found = {}
    for name, entry in part["features"].items():
        found.setdefault(entry["status"], set()).add(name)
    return found


def test_held_out_digits_are_not_flagged(served, capsys):
    code, result, out = run_monitor(served, "held_out")
    assert code == 0, capsys.readouterr().out
    assert "within thresholds" in capsys.readouterr().out
    (version,) = result["versions"]
    assert version["version"] == 1 and not result["crossed"]
    skew = statuses(version["skew"])
    assert len(skew["ok"]) >= 64 + 2  # every pixel, predicted_class and score
    assert skew.get("no traffic") == {f"scores[{k}]" for k in range(10)}  # no classify requests were sent
    worst = max(e["distances"]["jsd"] for e in version["skew"]["features"].values() if e["distances"])
    assert worst < 0.1
    # The model's view: the failures never reached a version, so count in its error rate only.
    requests = result["requests"]
    assert requests["requests"] == served["requests"] + FAILED and requests["errors"] == FAILED
    assert requests["by_status"]["INVALID_ARGUMENT"] == FAILED and requests["by_label"] == {
        "stable": served["requests"], "(none)": FAILED}
    assert version["requests"]["requests"] == served["requests"] and version["requests"]["errors"] == 0
    assert 0 < version["requests"]["latency_ms"]["p50"] <= version["requests"]["latency_ms"]["p99"] < 30_000
    # All traffic fell in the latest hour: the hour before has none, so drift says so.
    assert set(statuses(version["drift"])) <= {"too few values", "no traffic"}
    assert (out / "monitor.html").exists() and (out / "distances_1.png").exists()


def test_inverted_digits_are_flagged_on_the_pixels_and_the_answers(served, capsys, tmp_path):
    textfile = tmp_path / "tfbig_monitor.prom"
    code, result, out = run_monitor(served, "shifted", "--prometheus-textfile", str(textfile))
    printed = capsys.readouterr().out
    assert code == 1 and "THRESHOLD CROSSED" in printed
    skew = result["versions"][0]["skew"]["features"]
    crossed = {name for name, entry in skew.items() if entry["status"] == "crossed"}
    pixels = {name for name in crossed if name.startswith("inputs[")}
    assert len(pixels) >= 32, sorted(crossed)  # the mostly blank ones: see the drift test
    assert all(skew[name]["crossed"] == ["jsd"] for name in pixels)
    assert skew["inputs[0]"]["distances"]["jsd"] == pytest.approx(1.0)  # always 0 in training, now 1
    assert "score" in crossed or "predicted_class" in crossed  # the model answers differently too
    html = (out / "monitor.html").read_text()
    assert "THRESHOLD CROSSED" in html and html.count("data:image/png;base64,") == 2
    prom = textfile.read_text()
    assert 'tfbig_monitor_crossed{comparison="skew",model="shifted",version="1"} 1.0' in prom
    assert re.search(r'tfbig_monitor_features_crossed\{comparison="skew",model="shifted",version="1"\} (\d+)',
                     prom).group(1) == str(len(crossed))


def test_drift_compares_the_latest_window_with_the_one_before(served, capsys):
    start, boundary, end = served["mixed"]
    window = max(boundary - start, end - boundary) + 0.01
    code, result, _ = run_monitor(served, "mixed", f"--window={window}s", f"--until={boundary + window}")
    assert code == 1
    drift = result["versions"][0]["drift"]
    assert drift["records"] == {"previous": served["requests"], "latest": served["requests"]}
    found = statuses(drift)
    # Inverting moves the pixels that are mostly blank (most of them); the busiest, half ink and
    # half blank, keep much the same histogram.
    assert len({n for n in found["crossed"] if n.startswith("inputs[")}) >= 32
    assert "nad" in drift["features"]["predicted_class"]["distances"]  # equal windows: counts compare
    # Thresholds from a file: turned off for every feature, nothing crosses.
    off = served["root"] / "off.yaml"
    off.write_text('"*": {jsd: null, linf: null}\n')
    code, result, _ = run_monitor(served, "mixed", f"--window={window}s", f"--until={boundary + window}",
                                  "--thresholds", str(off))
    assert code == 0 and not result["crossed"]
    assert "within thresholds" in capsys.readouterr().out


def test_prometheus_alert_rules_use_only_metrics_that_exist(served, tmp_path):
    """serving/prometheus_alerts.yaml: its groups, and every metric name in its expressions is one the
    embedded server exports (/monitoring/prometheus/metrics) or tfbig monitor writes."""
    rules = yaml.safe_load((SERVING_DIR / "prometheus_alerts.yaml").read_text())
    groups = {group["name"]: group["rules"] for group in rules["groups"]}
    assert set(groups) == {"tfbig-serving", "tfbig-request-log", "tfbig-monitor"}
    for group in groups.values():
        for rule in group:
            assert rule["alert"] and rule["expr"] and rule["labels"]["severity"] in ("warning", "critical")
            assert rule["annotations"]["summary"]
    textfile = tmp_path / "m.prom"
    assert run_monitor(served, "shifted", "--prometheus-textfile", str(textfile))[0] == 1
    exported = {line.split("{")[0].split(" ")[0] for text in (served["metrics"], textfile.read_text())
                for line in text.splitlines() if line and not line.startswith("#")}
    names = re.compile(r":tensorflow:serving:\w+|:tfbig:serving:\w+|tfbig_monitor_\w+")
    used = {name for group in groups.values() for rule in group for name in names.findall(rule["expr"])}
    assert used and used <= exported, used - exported


# --- a language model: a text of another domain -------------------------------------------------

RUSSIAN = "Съешь же ещё этих мягких французских булок, да выпей чаю. Широкая электрификация южных губерний. "


@pytest.fixture(scope="module")
def served_gpt(tmp_path_factory):
    """The byte GPT (trained on English prose, CPython's pydoc topics) sent 64 windows of its eval
    text as `prose`, and 64 windows of Russian as `russian`; token ids are UTF-8 bytes."""
    root = tmp_path_factory.mktemp("monitor-gpt")
    base = root / "gpt"
    export_gpt(root / "run", base)
    rows, width = 64, GPT["max_len"]
    prose = eval_rows(make_config(root / "data"))[:rows, :width]
    text = np.frombuffer((RUSSIAN * 40).encode(), np.uint8)
    russian = np.stack([text[i * width:(i + 1) * width] for i in range(rows)]).astype(np.int32)
    entries = "".join(f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}\n'
                      for name in ("prose", "russian"))
    config = root / "models.config"
    config.write_text(f"model_config_list {{\n{entries}}}\n")
    server = start_server(config, f"--request_log_dir={root / 'logs'}")
    try:
        with Client(f"127.0.0.1:{server.grpc_port}") as client:
            for name, tokens in (("prose", prose), ("russian", russian)):
                for start in range(0, rows, 8):
                    client.predict(name, tokens[start:start + 8])
    finally:
        server.stop()
    thresholds = root / "thresholds.yaml"  # over 256 byte ids L-infinity moves little: judge by JSD
    thresholds.write_text("tokens: {jsd: 0.3}\npredicted_token: {jsd: 0.3}\n")
    return {"root": root, "base": base, "logs": root / "logs", "thresholds": thresholds}


def test_a_text_of_another_domain_is_flagged_by_its_token_frequencies(served_gpt, capsys):
    results = {}
    for name in ("prose", "russian"):
        code, result, _ = run_monitor(served_gpt, name, "--thresholds", str(served_gpt["thresholds"]))
        results[name] = (code, result["versions"][0]["skew"]["features"])
    code, prose = results["prose"]
    assert code == 0, capsys.readouterr().out
    assert prose["tokens"]["status"] == "ok" and prose["tokens"]["count"] == 64 * GPT["max_len"]
    assert prose["tokens"]["distances"]["jsd"] < 0.1
    code, russian = results["russian"]
    assert code == 1
    assert "jsd" in russian["tokens"]["crossed"] and russian["tokens"]["distances"]["jsd"] > 0.5
    # The model's answers move too, enough for the default L-infinity threshold on their own.
    assert "linf" in russian["predicted_token"]["crossed"]
