"""A SentencePiece GPT from the standard library's source to served text.

Prepares a slice of CPython's own library with a BPE tokenizer, trains a tiny
GPT on it, exports it (the tokenizer inside the `generate` graph) and checks
that the same text comes back from the SavedModel in a fresh process that
imports only TensorFlow and TensorFlow Text, and from the embedded server over
REST and gRPC, and streamed by `:generate_stream`.
"""

import glob
import hashlib
import json
import os
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
import sentencepiece

from tfbig.data.prepare import prepare_dataset
from tfbig.export import export_run
from tfbig.serving import Client
from tfbig.train import train

from runs import GPT, make_config
from serving_models import model_config_text, start_server

pytestmark = pytest.mark.slow
PROMPTS = ["def ", "import os\n", "class Parser:\n    "]
NEW_TOKENS = 8
# Characters the tokenizer has no piece for: byte_fallback spells each in several byte tokens.
NON_ASCII = "# naïve café — 日本語 🎉\n"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    library = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "json", "*.py")))
    library += sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "email", "*.py")))[:12]
    prepare_dataset(library, str(root / "data"), tokenizer="bpe", vocab_size=400, eval_fraction=0.2,
                    workers=1, quiet=True)
    config = make_config(root / "run", model={**GPT, "max_len": 64},
                         data={"name": "tokens", "paths": [str(root / "data")], "seq_len": 32},
                         steps=20, checkpoint_every=20)
    train(config)
    return export_run(str(root / "run"), str(root / "models" / "lm"), onnx=True, tflite=("float32",)).path


def in_process_texts(path) -> list[str]:
    import tensorflow as tf

    from tfbig import saved_model

    generate = saved_model.load(path).signatures["generate"]
    out = generate(text=tf.constant([p.encode() for p in PROMPTS]), max_new_tokens=tf.constant(NEW_TOKENS),
                   temperature=tf.constant(0.0), top_k=tf.constant(0), seed=tf.constant(0, tf.int64))
    return [t.decode("utf-8", "replace") for t in out["text"].numpy()]


def test_the_exported_tokenizer_is_the_prepared_one(exported):
    import tensorflow as tf

    from tfbig import saved_model

    manifest = json.load(open(os.path.join(exported, "assets.extra", "tfbig_manifest.json")))
    assert manifest["tokenizer"]["kind"] == "sentencepiece"
    assert manifest["tokenizer"]["in_graph"] == ["generate", "generate_start", "generate_next"]
    shipped = open(os.path.join(exported, manifest["tokenizer"]["file"]), "rb").read()
    prepared = json.load(open(os.path.join(manifest["config"]["data"]["paths"][0], "spec.json")))["tokenizer"]
    assert hashlib.sha256(shipped).hexdigest() == prepared["sha256"] == manifest["files"][manifest["tokenizer"]["file"]]
    generate = saved_model.load(exported).signatures["generate"]
    out = generate(text=tf.constant([b"import json"]), max_new_tokens=tf.constant(4),
                   temperature=tf.constant(0.0), top_k=tf.constant(0), seed=tf.constant(0, tf.int64))
    assert out["tokens"].shape == (1, 4) and int(np.max(out["tokens"])) < 400


def test_onnx_and_tflite_take_the_ids_of_the_tokenizer_shipped_beside_them(exported):
    # They carry the token-level forward only; the manifest says so, and the shipped
    # SentencePiece model turns text into the ids they take.
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    from tfbig import saved_model

    manifest = json.load(open(os.path.join(exported, "assets.extra", "tfbig_manifest.json")))
    assert {kind.split("_")[0] for kind in manifest["artifacts"]} == {"onnx", "tflite"}
    assert {"onnx", "tflite"} <= set(manifest["tokenizer"]["token_ids"])
    tokenizer = sentencepiece.SentencePieceProcessor(model_file=os.path.join(exported, manifest["tokenizer"]["file"]))
    ids = np.array([tokenizer.encode("import json\nclass Decoder:\n")[:16]], np.int32)
    expected = saved_model.load(exported).signatures["serving_default"](inputs=ids)["logits"].numpy()
    onnx = onnxruntime.InferenceSession(os.path.join(exported, manifest["artifacts"]["onnx"]))
    np.testing.assert_allclose(onnx.run(None, {"inputs": ids})[0], expected, atol=1e-4)
    tflite = Interpreter(model_path=os.path.join(exported, manifest["artifacts"]["tflite_float32"]))
    np.testing.assert_allclose(tflite.get_signature_runner()(inputs=ids)["logits"], expected, atol=1e-4)


def test_a_fresh_process_with_only_tensorflow_and_tensorflow_text_generates_the_same_text(exported):
    script = (
        "import json, sys\n"
        "import tensorflow as tf\n"
        "import tensorflow_text\n"
        f"loaded = tf.saved_model.load({exported!r})\n"
        "generate = loaded.signatures['generate']\n"
        f"out = generate(text=tf.constant({[p.encode() for p in PROMPTS]!r}), max_new_tokens=tf.constant({NEW_TOKENS}),\n"
        "               temperature=tf.constant(0.0), top_k=tf.constant(0), seed=tf.constant(0, tf.int64))\n"
        "print(json.dumps([t.decode('utf-8', 'replace') for t in out['text'].numpy()]))\n"
        "streamed = []\n"  # the stream functions, as the README shows them
        f"for prompt in {PROMPTS!r}:\n"
        "    step = loaded.generate_start(text=tf.constant(prompt), max_new_tokens=tf.constant("
        f"{NEW_TOKENS}), temperature=tf.constant(0.0), top_k=tf.constant(0), seed=tf.constant(0, tf.int64))\n"
        "    text = step['piece'].numpy()\n"
        "    while not step['done']:\n"
        "        step = loaded.generate_next(step['state'])\n"
        "        text += step['piece'].numpy()\n"
        "    streamed.append(text.decode('utf-8', 'replace'))\n"
        "print(json.dumps(streamed))\n"
        "print(sorted(m for m in sys.modules if m == 'tfbig' or m.startswith('tfbig.')))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    texts_line, streamed_line, modules_line = result.stdout.strip().splitlines()[-3:]
    assert json.loads(texts_line) == json.loads(streamed_line) == in_process_texts(exported)
    assert modules_line == "[]"


def test_the_served_subword_gpt_answers_generate_over_rest_and_grpc(exported, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"lm": os.path.dirname(exported)}))
    server = start_server(config)
    try:
        expected = in_process_texts(exported)
        for protocol, port in (("grpc", server.grpc_port), ("rest", server.rest_port)):
            with Client(f"127.0.0.1:{port}", protocol=protocol) as client:
                assert client.generate("lm", PROMPTS, max_new_tokens=NEW_TOKENS) == expected
    finally:
        server.stop()


def test_the_served_subword_gpt_streams_generates_text(exported, tmp_path):
    """Greedy and seeded, a prompt spelled partly in byte pieces included: the streamed pieces
    join to `generate`'s text."""
    manifest = json.load(open(os.path.join(exported, "assets.extra", "tfbig_manifest.json")))
    with open(os.path.join(exported, manifest["tokenizer"]["file"]), "rb") as f:
        tokenizer = sentencepiece.SentencePieceProcessor(model_proto=f.read())
    assert any(piece.startswith("<0x") for piece in tokenizer.encode(NON_ASCII, out_type=str))
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"lm": os.path.dirname(exported)}))
    server = start_server(config)
    try:
        with Client(f"127.0.0.1:{server.rest_port}", protocol="rest") as client:
            for sampling in ({}, {"temperature": 1.0, "seed": 2}, {"temperature": 0.8, "top_k": 20, "seed": 5}):
                for prompt in [*PROMPTS, NON_ASCII]:
                    expected = client.generate("lm", [prompt], max_new_tokens=2 * NEW_TOKENS, **sampling)[0]
                    pieces = list(client.generate_stream("lm", prompt, max_new_tokens=2 * NEW_TOKENS, **sampling))
                    assert "".join(pieces) == expected, (prompt, sampling)
    finally:
        server.stop()


def test_models_verify_serves_the_subword_gpt_and_compares_its_generated_text(exported):
    """`tfbig models verify`'s checks: the manifest, a load by a fresh server, and each recorded
    warmup request answered as at export, the string `generate` signature included."""
    from tfbig.lifecycle import ModelRegistry, validate_version

    result = validate_version(ModelRegistry(os.path.dirname(exported), model_name="lm"),
                              int(os.path.basename(exported)), engine="embedded")
    assert result.passed, result.problems
    compared = {(check["signature"], check["output"]) for check in result.checks}
    assert {("generate", "text"), ("generate", "tokens"), ("serving_default", "logits")} <= compared
