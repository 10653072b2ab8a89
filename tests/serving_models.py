"""Model base paths and servers shared by the serving tests."""

import os
import socket

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

from tfbig.data import load_data
from tfbig.export import TrainedModel, export_run
from tfbig.models import build_model
from tfbig.serving import EmbeddedServer, parse_serve_args
from tfbig.train import train

from certs import self_signed_server, write_ssl_config
from runs import GPT, make_config

DIGITS_CNN = {"name": "cnn", "filters": [8, 16], "blocks_per_stage": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_tls_files(folder) -> tuple[bytes, bytes, str]:
    """A self-signed certificate for localhost and 127.0.0.1: (key PEM, certificate PEM, path of
    a TF Serving SSLConfig naming them)."""
    server = self_signed_server()
    return server.key, server.cert, write_ssl_config(folder, server)


def labelled_version(grpc_target: str, model: str, label: str) -> int:
    """The version a server resolves `label` to: GetModelMetadata's reply names it (GetModelStatus
    ignores labels, in TF Serving and here)."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name, request.model_spec.version_label = model, label
    with grpc.insecure_channel(grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.GetModelMetadata(request, timeout=30).model_spec.version.value


def export_digits(run_dir, base) -> str:
    train(make_config(run_dir, model=DIGITS_CNN, data={"name": "digits"}, steps=30, batch_size=32,
                      eval_every=30, checkpoint_every=30, optimizer={"learning_rate": 1e-2}))
    return export_run(str(run_dir), str(base)).path


def export_gpt(run_dir, base) -> str:
    train(make_config(run_dir, model=GPT, steps=20, checkpoint_every=20))
    return export_run(str(run_dir), str(base)).path


def untrained_gpt(run_dir, **model) -> TrainedModel:
    """A byte GPT with fresh weights, as `restore_run` returns a trained one: what exporting,
    generating and streaming need, without the training (its random text exercises more)."""
    config = make_config(run_dir, model={**GPT, **model})
    source = load_data(config.data)
    return TrainedModel(config=config, source=source, model=build_model(config.model, source.spec),
                        step=0, checkpoint="", eval_metrics={})


class TwoInputs(tf.Module):
    """A SavedModel not made by tfbig: two inputs, a `_bytes` output, no manifest."""

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None], tf.string)])
    def serve(self, x, tag):
        return {"total": tf.reduce_sum(x, axis=1),
                "tag_bytes": tf.strings.join([tag, tf.constant(b"\xff")])}


def save_two_inputs(base) -> str:
    module = TwoInputs()
    path = os.path.join(str(base), "7")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def model_config_text(models: dict[str, str]) -> str:
    entries = "".join(f'  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}\n'
                      for name, path in models.items())
    return f"model_config_list {{\n{entries}}}\n"


def start_server(config_file, *flags) -> EmbeddedServer:
    options = parse_serve_args([
        "--host=127.0.0.1", "--port=0", f"--rest_api_port={free_port()}",
        f"--model_config_file={config_file}", "--file_system_poll_wait_seconds=0", *flags])
    return EmbeddedServer.from_options(options).start()


def digits_images(n: int, seed: int = 0) -> np.ndarray:
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32) / 16.0
    return images[np.random.RandomState(seed).choice(len(images), n, replace=False)]
