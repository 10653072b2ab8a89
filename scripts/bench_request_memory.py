"""Peak server memory per request, as a multiple of the request's size on the wire.

Saves a one-signature SavedModel (`total = reduce_sum(x, axis=1)`, x float32
[?, ?]: its own work is negligible, so what is measured is the request path),
starts `tfbig serve --engine embedded` in a child process and sends it one
request at a time, each a single row of N floats:

- gRPC with the values in `tensor_content` (what TF Serving's clients send);
- gRPC with the values in `float_val`;
- REST, row format (`instances`) and columnar (`inputs`);
- gRPC and REST requests of a few bytes that declare a huge tensor (refused).

Before each request the server's peak RSS is set back to its current RSS
(writing 5 to /proc/PID/clear_refs); after the answer, the peak's growth is
read (VmHWM). Each point is the smallest of `--repeats` tries (the allocator
keeps memory it has once had, which hides growth; a larger growth is the
real one, a smaller one never an artefact), reported as MB and as a
multiple of the request's wire size.

    python scripts/bench_request_memory.py [--sizes-mb 1,8,32] [--repeats 3]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import tfbig  # noqa: F401  (Keras 2 before TensorFlow loads)

import grpc
import numpy as np
import requests
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfbig.serving import codec
from tfbig.serving.process import ServerProcess

MODEL = "sum"


class Sum(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
    def serve(self, x):
        return {"total": tf.reduce_sum(x, axis=1)}


def save_model(base: str) -> None:
    module = Sum()
    tf.saved_model.save(module, os.path.join(base, "1"), signatures={"serving_default": module.serve})


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def peak_growth_mb(pid: int, send) -> float:
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")  # VmHWM := VmRSS
    start = _status_kb(pid, "VmHWM")
    send()
    return (_status_kb(pid, "VmHWM") - start) / 1024


def grpc_request(values: np.ndarray, as_float_val: bool) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    if as_float_val:
        proto = request.inputs["x"]
        proto.dtype = types_pb2.DT_FLOAT
        proto.tensor_shape.dim.add(size=1)
        proto.tensor_shape.dim.add(size=values.size)
        proto.float_val.extend(values.tolist())
    else:
        codec.to_tensor_proto(values.reshape(1, -1), out=request.inputs["x"])
    return request


def huge_grpc_request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    proto = request.inputs["x"]
    proto.dtype = types_pb2.DT_FLOAT
    proto.tensor_shape.dim.add(size=1)
    proto.tensor_shape.dim.add(size=2 ** 31)
    return request


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", default="1,8,32", help="row sizes, in MB of float32 values")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [float(size) for size in args.sizes_mb.split(",")]
    work = tempfile.mkdtemp(prefix="tfbig-bench-memory-")
    save_model(os.path.join(work, MODEL))
    max_bytes = int(max(sizes) * 4 * 2 ** 20)  # room for the REST text of the largest row
    flags = [f"--model_name={MODEL}", f"--model_base_path={os.path.join(work, MODEL)}",
             f"--max_request_bytes={max_bytes}", "--rest_api_timeout_in_ms=600000"]
    points = []
    with ServerProcess(flags, model_name=MODEL, log_path=os.path.join(work, "server.log"),
                       engine="embedded") as server:
        channel = grpc.insecure_channel(server.grpc_target, options=[
            ("grpc.max_send_message_length", max_bytes), ("grpc.max_receive_message_length", max_bytes)])
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        rest_url = f"http://{server.rest_target}/v1/models/{MODEL}:predict"

        def measure(kind: str, wire: bytes, send) -> None:
            growth = min(peak_growth_mb(server.pid, lambda: send(wire)) for _ in range(args.repeats))
            points.append({"request": kind, "wire_mb": round(len(wire) / 2 ** 20, 4),
                           "peak_growth_mb": round(growth, 1),
                           "multiple_of_wire": round(growth * 2 ** 20 / len(wire), 2)})

        def send_grpc(wire: bytes) -> None:
            try:
                stub.Predict(predict_pb2.PredictRequest.FromString(wire), timeout=600)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    raise

        def send_rest(wire: bytes) -> None:
            status = requests.post(rest_url, data=wire, timeout=600).status_code
            if status not in (200, 400):
                raise RuntimeError(f"REST answered {status}")

        for size in sizes:
            values = np.random.RandomState(0).rand(int(size * 2 ** 20 / 4)).astype(np.float32)
            measure("grpc tensor_content", grpc_request(values, False).SerializeToString(), send_grpc)
            measure("grpc float_val", grpc_request(values, True).SerializeToString(), send_grpc)
            row = values.reshape(1, -1)
            measure("rest instances", codec.dumps({"instances": row}), send_rest)
            measure("rest inputs", codec.dumps({"inputs": row}), send_rest)
        measure("grpc declaring 2**31 floats (refused)", huge_grpc_request().SerializeToString(), send_grpc)
        measure("rest 1e6 scalar instances, wrong rank (refused)", codec.dumps({"instances": [1.0] * 10 ** 6}), send_rest)
        rss_mb = _status_kb(server.pid, "VmRSS") / 1024
    json.dump({"benchmark": "request_memory", "server_rss_mb_at_end": round(rss_mb, 1), "points": points},
              sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
