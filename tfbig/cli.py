"""The `tfbig` command line: one small function per subcommand.

TensorFlow takes seconds to import, so subcommands import it lazily and
`tfbig --help` / `tfbig --version` answer at once. Every error tfbig raises
on purpose derives from `tfbig.errors.TfbigError` and is printed as one line
naming the problem, with exit status 2 for bad input (`UsageError`: a bad
config, a missing file) and 1 for failed work (`RunError`: a diverged run,
damaged checkpoints, an unreachable server), instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import tfbig
from tfbig.errors import TfbigError
from tfbig.startup import import_tensorflow, verbose_from_env

EXAMPLES = """\
examples:
  tfbig configs                                           # the configs shipped with tfbig
  tfbig train gpt_tiny                                    # a shipped config, by name
  tfbig train my.yaml --set train.steps=300 --output-dir runs/mine
  tfbig data prepare corpus/ 'more/*.jsonl.gz' --output data/corpus --vocab-size 8192
  tfbig train runs/digits/config.yaml --set train.steps=600   # continue a run
  tfbig info gpt2_small --set train.batch_size=4
  tfbig compress runs/digits --method prune --set compress.prune.target_sparsity=0.8
  tfbig export runs/digits --model-base-path models/digits --onnx --tflite float32,int8
  tfbig serve --port=8500 --rest_api_port=8501 --model_name=digits --model_base_path=models/digits
  tfbig predict localhost:8500 digits --inputs '[[...64 pixels...]]'
  tfbig pipeline quickstart                               # train ... serve ... report
  tfbig models list --model-base-path runs/quickstart/models/quickstart
  tfbig models rollback --model-base-path models/digits --server localhost:8500
  tfbig keys generate --output keys/ && tfbig export runs/digits --sign-key keys/signing_key.pem
  tfbig report runs/quickstart
  tfbig monitor --model-base-path models/digits --log-dir /var/log/tfbig --window 1h
  tfbig launch --workers 2 -- tfbig train cfg.yaml --set distribute.strategy=multi_worker
  tfbig launch --workers 2 --ps 1 --evaluator --max-restarts 2 -- tfbig train cfg.yaml
  tfbig launch --workers 2 --data-service-workers 2 -- tfbig train cfg.yaml   # tf.data service
  tfbig data service dispatcher --port 5050                # or a tf.data service by hand
"""


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file, a run's config.yaml, or the name "
                                       "of a shipped config (see tfbig configs)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value by dotted key, e.g. --set train.steps=100 "
             "(repeatable; values are parsed as YAML)",
    )


def _load(args):
    """The config of a command that takes one (tfbig.config imports no TensorFlow)."""
    from tfbig.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "output_dir", None):
        overrides.append(f"output.dir={args.output_dir}")
    return load_config(args.config, overrides)


def cmd_train(args) -> int:
    """Train (or resume) the run described by a config."""
    from tfbig.train import train

    config = args.loaded_config
    result = train(config)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in result.eval_metrics.items())
    print(f"trained to step {result.step} in {config.output.dir}" + (f": {shown}" if shown else ""))
    if result.stopped_early:
        print(f"stopped early: {config.train.early_stopping.metric} stopped improving")
    return 0


def cmd_info(args) -> int:
    """Size, FLOPs and memory of the configured model, computed without building it."""
    from tfbig.data import load_data
    from tfbig.data.prepare import planned_data_spec
    from tfbig.models import format_stats, model_stats

    config = args.loaded_config
    # A config that prepares its data may run before the dataset exists.
    spec = planned_data_spec(config.data) if config.data.prepare else load_data(config.data).spec
    stats = model_stats(
        config.model, spec, batch_size=config.train.batch_size,
        precision=config.train.precision, optimizer=config.train.optimizer.name,
    )
    vocabulary = f" vocabulary {spec.num_classes}" if spec.task == "lm" else ""
    print(f"model: {config.model.name}   data: {config.data.name} {spec.input_shape} "
          f"{spec.input_dtype}{vocabulary}   batch: {config.train.batch_size}   "
          f"precision: {config.train.precision}   optimizer: {config.train.optimizer.name}")
    print(format_stats(stats))
    return 0


def cmd_configs(args) -> int:
    """List the configs shipped with tfbig, usable by name (tfbig train NAME)."""
    from tfbig.config import describe_config, shipped_configs

    shipped = shipped_configs()
    width = max(map(len, shipped), default=0)
    for name, path in shipped.items():
        print(f"{name:<{width}}  {describe_config(path)}")
    return 0


def cmd_export(args) -> int:
    """Export a trained run as a new version of a TF Serving model base path."""
    from tfbig.export import export_run

    result = export_run(
        args.run_dir, args.model_base_path, version=args.version, overwrite=args.overwrite,
        onnx=args.onnx, onnx_opset=args.onnx_opset, tflite=tuple(args.tflite),
        checkpoint=args.checkpoint, sign_key=args.sign_key,
    )
    print(f"exported version {result.version} to {result.path}")
    print(f"  signatures: {', '.join(result.signatures)}")
    if result.signed_by:
        print(f"  signed by key {result.signed_by}")
    for artifact, report in result.parity.items():
        shown = ", ".join(f"{k}={v:.3g}" for k, v in report.items())
        print(f"  parity {artifact}: {shown}")
    return 0


def cmd_compress(args) -> int:
    """Compress a trained run (pruning, QAT, PTQ, clustering, distillation) and report what it bought."""
    from tfbig.compress import compress_run

    result = compress_run(args.run_dir, method=args.method, overrides=tuple(args.overrides),
                          output_dir=args.output_dir)
    print(f"compressed ({result.method}) into {result.output_dir}")
    print(open(result.files["md"], encoding="utf-8").read().rstrip())
    print(f"report: {result.files['json']}; export it with `tfbig export "
          f"{result.output_dir}`")
    return 0


def cmd_serve(args) -> int:
    """Serve model base paths over TF Serving's gRPC and REST APIs (tensorflow_model_server flags)."""
    from tfbig.serving.options import options_from_args
    from tfbig.serving.serve import serve

    return serve(options_from_args(args), verbose=args.verbose or verbose_from_env())


def _predict_inputs(args, signature) -> dict:
    """--inputs JSON (or --npz) as arrays of the signature's dtypes."""
    import json

    import numpy as np

    from tfbig.serving import codec

    if args.npz:
        with np.load(args.npz) as arrays:
            return {name: arrays[name] for name in arrays.files}
    try:
        value = json.loads(args.inputs)
    except ValueError as e:
        raise SystemExit(f"tfbig predict: error: --inputs is not JSON: {e}") from None
    if not isinstance(value, dict):
        if len(signature.inputs) != 1:
            raise SystemExit(f"tfbig predict: error: the signature takes {sorted(signature.inputs)}; "
                             f"give --inputs as a JSON object of name -> value")
        value = {next(iter(signature.inputs)): value}
    return {name: codec.json_to_array(v, signature.inputs[name].dtype) if name in signature.inputs
            else np.asarray(v) for name, v in value.items()}


def cmd_predict(args) -> int:
    """Call a served model (tensorflow_model_server or tfbig serve) and print its outputs as JSON."""
    from tfbig.protocol import DEFAULT_SIGNATURE
    from tfbig.serving import Client, codec

    with Client(args.target, protocol=args.protocol, timeout=args.timeout,
                **_client_credentials(args).client_kwargs()) as client:
        signatures = client.metadata(args.model, version=args.model_version, label=args.label)
        name = args.signature or DEFAULT_SIGNATURE
        if name not in signatures:
            raise SystemExit(f"tfbig predict: error: model {args.model!r} has no signature {name!r}; "
                             f"it has {', '.join(sorted(signatures))}")
        outputs = client.predict(args.model, _predict_inputs(args, signatures[name]), signature=args.signature,
                                 version=args.model_version, label=args.label)
    print(codec.dumps({k: codec.output_to_json(k, v) for k, v in outputs.items()}).decode())
    return 0


def _add_client_credentials(parser) -> None:
    """The flags that give a command's client a token and TLS (see tfbig.serving.client.credentials)."""
    group = parser.add_argument_group("authentication and TLS (a server started with --auth_token_file "
                                      "or --ssl_config_file)")
    group.add_argument("--token-file", metavar="FILE", help="send the first token of FILE as `authorization: "
                       "Bearer TOKEN` (default: $TFBIG_SERVING_TOKEN)")
    group.add_argument("--tls", action="store_true", help="TLS, the server verified with the public roots")
    group.add_argument("--ca-cert", metavar="PEM", help="TLS, the server verified with this CA")
    group.add_argument("--client-cert", metavar="PEM", help="mutual TLS: this client certificate "
                       "(with --client-key)")
    group.add_argument("--client-key", metavar="PEM", help="mutual TLS: the client certificate's key")


def _client_credentials(args):
    from tfbig.serving import Credentials

    return Credentials.from_files(token_file=args.token_file, ca_cert=args.ca_cert, client_cert=args.client_cert,
                                  client_key=args.client_key, tls=args.tls)


def cmd_launch(args) -> int:
    """Run a command as every task of a local cluster (TF_CONFIG set per task)."""
    from tfbig.distribute.cluster import Cluster, k8s_manifest
    from tfbig.distribute.launch import Launcher

    command = args.task_command[1:] if args.task_command[:1] == ["--"] else args.task_command

    def make_cluster() -> Cluster:
        return Cluster.local(args.workers, args.ps, args.evaluator, args.data_service_workers)

    try:
        cluster = make_cluster()
    except ValueError as e:
        return _usage_error(args, str(e))
    if not command and not args.print_tf_config:
        return _usage_error(args, "no command given: tfbig launch --workers N -- COMMAND ...")
    if args.print_tf_config:
        for kind, index in cluster.tasks:
            print(kind, index, json.dumps(cluster.tf_config(kind, index)))
        return 0
    if args.k8s_manifest:
        print(k8s_manifest(cluster, name=args.name, image=args.image, command=command), end="")
        return 0
    launcher = Launcher(make_cluster, command,
                        max_restarts=args.max_restarts, grace_period_s=args.grace_period)
    try:
        return launcher.run()
    except FileNotFoundError as e:
        return _usage_error(args, f"cannot start the command: {e}")


def cmd_pipeline(args) -> int:
    """Prepare, train, evaluate, compress, export, validate, promote, serve and report, resumably."""
    from tfbig.pipeline import run_pipeline, serving_hint

    config = args.loaded_config
    result = run_pipeline(config, until=args.until, keep_serving=args.keep_serving)
    if result.report:
        print(f"report: {result.report}   (tfbig report {result.run_dir})")
    if result.version is not None and "promote" in result.statuses:
        print(serving_hint(result, model_family=config.model.name))
    return 0


def cmd_models(args) -> int:
    """Versions and labels of a model base path: list, verify, promote, rollback, prune-old, history."""
    from tfbig.export.signing import load_public_key
    from tfbig.lifecycle import ModelRegistry, format_history, format_versions, validate_version

    registry = ModelRegistry(args.model_base_path, model_name=args.model_name,
                             config_file=args.model_config_file)
    if args.action == "list":
        print(format_versions(registry.rows()))
    elif args.action == "history":
        print(format_history(registry.history()))
    elif args.action == "verify":
        version = args.version or (registry.versions() or [None])[-1]
        if version is None:
            return _usage_error(args, f"no versions in {registry.base_path}")
        key = load_public_key(args.verify_key) if args.verify_key else None
        result = validate_version(registry, version, engine=args.engine, verify_key=key)
        worst = max((c["max_abs_error"] for c in result.checks), default=0.0)
        verdict = "passed" if result.passed else "FAILED"
        print(f"version {version} {verdict}: loaded in {result.load_seconds:.1f} s by {result.engine}; "
              f"{len(result.checks)} outputs compared, max abs error {worst:.3g}"
              + (f"; {result.note}" if result.note else ""))
        for problem in result.problems:
            print(f"  {problem}")
        return 0 if result.passed else 1
    elif args.action == "promote":
        if args.version is None:
            return _usage_error(args, "promote needs a VERSION")
        labels = registry.promote(args.version, args.label, server=args.server,
                                  credentials=_client_credentials(args))
        print(f"{args.label} -> version {args.version}; labels now {labels}")
    elif args.action == "rollback":
        labels = registry.rollback(args.label, server=args.server, credentials=_client_credentials(args))
        print(f"{args.label} rolled back to version {labels[args.label]}; labels now {labels}")
    else:
        removed = registry.prune_old(args.keep, dry_run=args.dry_run)
        done = "would remove" if args.dry_run else "removed"
        print(f"{done} versions {', '.join(map(str, removed))}" if removed else "nothing to remove")
    return 0


def cmd_keys(args) -> int:
    """Make an Ed25519 key pair for signing exported versions (tfbig export --sign-key)."""
    from tfbig.export.signing import generate_key_pair, key_id, load_public_key

    private, public = generate_key_pair(args.output)
    print(f"private key: {private} (sign with: tfbig export RUN_DIR --sign-key {private}; keep it secret)")
    print(f"public key:  {public} (key {key_id(load_public_key(public))}; give it to servers: "
          f"tfbig serve --verify_key {public})")
    return 0


def cmd_data_prepare(args) -> int:
    """Tokenize a corpus of text files into a sharded dataset directory (no TensorFlow needed)."""
    from tfbig.data.prepare import prepare_dataset

    given = {name: getattr(args, name) for name in ("tokenizer", "vocab_size", "special_tokens",
                                                    "eval_fraction", "text_field", "sample_bytes", "workers")}
    spec = prepare_dataset(args.paths, args.output, **{k: v for k, v in given.items() if v is not None})
    shown = "; ".join(f"{name} {split['documents']:,} documents, {split['tokens']:,} tokens, "
                      f"{split['bytes'] / max(split['tokens'] - split['documents'], 1):.2f} bytes/token, "
                      f"{len(split['shards'])} shards" for name, split in spec["splits"].items())
    print(f"{args.output}: {spec['tokenizer']['kind']} tokenizer of {spec['tokenizer']['vocab_size']:,} "
          f"ids; {shown}; {spec['duplicates_dropped']:,} duplicates dropped")
    return 0


def cmd_data_service(args) -> int:
    """Run a tf.data service dispatcher or worker until stopped (distribute.data_service)."""
    from tfbig.distribute.data_service import serve_dispatcher, serve_worker

    if args.role == "dispatcher":
        serve_dispatcher(args.port)
    else:
        serve_worker(args.dispatcher, host=args.host, port=args.port)
    return 0


def cmd_report(args) -> int:
    """Write RUN_DIR/report/index.html (training, compression, export, serving) and open it."""
    from tfbig.report import write_report

    files = write_report(args.run_dir)
    print(f"report: {files.html}")
    if args.open:
        import webbrowser

        webbrowser.open(f"file://{os.path.abspath(files.html)}")
    return 0


def cmd_monitor(args) -> int:
    """Compare a model's logged traffic with its versions' reference statistics (skew, drift);
    exit 1 when a threshold is crossed."""
    from tfbig.monitor import (MonitorOptions, Thresholds, format_result, monitor, parse_duration,
                               parse_time, write_outputs, write_textfile)

    if args.min_count < 1:
        return _usage_error(args, f"--min-count must be at least 1, got {args.min_count}")
    options = MonitorOptions(
        model_base_path=args.model_base_path, log_dir=args.log_dir, model_name=args.model_name,
        version=args.version, since=None if args.since is None else parse_time(args.since),
        until=None if args.until is None else parse_time(args.until), window=parse_duration(args.window),
        min_count=args.min_count, thresholds=Thresholds.from_file(args.thresholds))
    result = monitor(options)
    files = write_outputs(result, args.output)
    if args.prometheus_textfile:
        write_textfile(args.prometheus_textfile, result)
    print(format_result(result))
    print(f"wrote {files.json} and {files.html}")
    return 1 if result["crossed"] else 0


def _usage_error(args, message: str) -> int:
    print(f"tfbig {args.command}: error: {message}", file=sys.stderr)
    return 2


def _variant_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line `tfbig CMD: error: ...` like every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tfbig",
        description="Train, compress, export and serve TensorFlow/Keras models from one config.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tfbig {tfbig.__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's own start-up logs (also: TFBIG_LOG=1)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help=cmd_train.__doc__, description=cmd_train.__doc__)
    _add_config_arguments(train)
    train.add_argument("--output-dir", help="run directory (overrides output.dir)")
    train.set_defaults(handler=cmd_train)

    info = commands.add_parser("info", help=cmd_info.__doc__, description=cmd_info.__doc__)
    _add_config_arguments(info)
    info.set_defaults(handler=cmd_info)

    configs = commands.add_parser("configs", help=cmd_configs.__doc__, description=cmd_configs.__doc__)
    configs.set_defaults(handler=cmd_configs, loads_tensorflow=False)

    export = commands.add_parser("export", help=cmd_export.__doc__, description=cmd_export.__doc__)
    export.add_argument("run_dir", help="a trained run directory (tfbig train --output-dir)")
    export.add_argument("--model-base-path", help="the model's directory of integer versions, "
                        "as tensorflow_model_server --model_base_path (default RUN_DIR/export)")
    export.add_argument("--version", type=int, help="version number (default: next integer)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing version")
    export.add_argument("--checkpoint", help="checkpoint to export (default: the latest)")
    export.add_argument("--onnx", action="store_true", help="also write model.onnx (tf2onnx)")
    export.add_argument("--onnx-opset", type=int, default=17, help="ONNX opset (default 17)")
    export.add_argument("--tflite", type=_variant_list, default=[], metavar="VARIANTS",
                        help="comma-separated TFLite variants: float32, float16, "
                             "dynamic_range, int8")
    export.add_argument("--sign-key", metavar="KEY", help="sign the version with this Ed25519 "
                        "private key (PEM; tfbig keys generate makes one)")
    export.set_defaults(handler=cmd_export)

    keys = commands.add_parser("keys", help="signing keys: tfbig keys generate --output DIR",
                               description="Signing keys for exported versions.")
    keys.add_argument("action", choices=("generate",), help="generate: a new Ed25519 key pair")
    keys.add_argument("--output", required=True, metavar="DIR", help="the directory to write "
                      "signing_key.pem (private, mode 0600) and signing_key.pub.pem into")
    keys.set_defaults(handler=cmd_keys, loads_tensorflow=False)

    from tfbig.config.schema import COMPRESS_METHODS, SERVING_ENGINES

    compress = commands.add_parser("compress", help=cmd_compress.__doc__,
                                   description=cmd_compress.__doc__)
    compress.add_argument("run_dir", help="a trained run directory")
    compress.add_argument("--method", choices=COMPRESS_METHODS,
                          help="compression method (default: compress.method of the run's config)")
    compress.add_argument("--set", dest="overrides", action="append", default=[],
                          metavar="KEY=VALUE",
                          help="override a compress.* or distribute.* value, e.g. "
                               "--set compress.prune.target_sparsity=0.5 (repeatable)")
    compress.add_argument("--output-dir", help="the compressed run directory "
                                               "(default RUN_DIR-METHOD)")
    compress.set_defaults(handler=cmd_compress)

    from tfbig.serving.options import build_parser as add_serve_flags

    serve = commands.add_parser("serve", help=cmd_serve.__doc__, description=cmd_serve.__doc__)
    add_serve_flags(serve)
    serve.set_defaults(handler=cmd_serve, loads_tensorflow=False)  # the embedded server chooses its kernels first

    predict = commands.add_parser("predict", help=cmd_predict.__doc__, description=cmd_predict.__doc__)
    predict.add_argument("target", help="server address: host:port (gRPC) or host:port / URL (REST)")
    predict.add_argument("model", help="model name")
    predict.add_argument("--protocol", choices=("grpc", "rest"), default="grpc")
    predict.add_argument("--signature", help="signature name (default serving_default)")
    predict.add_argument("--model-version", type=int, help="a specific version")
    predict.add_argument("--label", help="a version label, e.g. stable")
    given = predict.add_mutually_exclusive_group(required=True)
    given.add_argument("--inputs", help="JSON: an object of input name -> value, or the value "
                                        "of a single-input signature")
    given.add_argument("--npz", help="a .npz file of input name -> array")
    predict.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    _add_client_credentials(predict)
    predict.set_defaults(handler=cmd_predict)
    pipeline = commands.add_parser("pipeline", help=cmd_pipeline.__doc__, description=cmd_pipeline.__doc__)
    _add_config_arguments(pipeline)
    pipeline.add_argument("--output-dir", help="run directory (overrides output.dir)")
    pipeline.add_argument("--until", default="report", metavar="STAGE",
                          help="stop after this stage (default report, the last; an unknown name "
                               "is answered with the list)")
    pipeline.add_argument("--keep-serving", action="store_true",
                          help="keep the server running at the end until Ctrl-C")
    pipeline.set_defaults(handler=cmd_pipeline)

    models_parser = commands.add_parser("models", help=cmd_models.__doc__, description=cmd_models.__doc__)
    models_parser.add_argument("action", choices=("list", "verify", "promote", "rollback", "prune-old",
                                                  "history"))
    models_parser.add_argument("version", type=int, nargs="?", help="the version (verify, promote)")
    models_parser.add_argument("--model-base-path", required=True,
                               help="the model's directory of integer versions")
    models_parser.add_argument("--model-config-file", help="the models.config holding the labels "
                               "(default MODEL_BASE_PATH/models.config)")
    models_parser.add_argument("--model-name", help="the model's name in models.config "
                               "(default: its entry there, else the base path's name)")
    models_parser.add_argument("--label", default="stable", help="promote / rollback this label "
                               "(default stable)")
    models_parser.add_argument("--server", metavar="HOST:PORT", help="a running server (gRPC) "
                               "following models.config: labels move on it without a failed request")
    models_parser.add_argument("--engine", choices=SERVING_ENGINES,
                               default="auto", help="the server verify loads the version in")
    models_parser.add_argument("--keep", type=int, default=3, help="prune-old: newest versions "
                               "to keep (default 3; labelled ones always stay)")
    models_parser.add_argument("--dry-run", action="store_true", help="prune-old: only list them")
    models_parser.add_argument("--verify-key", metavar="PUB", help="verify: fail unless the version "
                               "is signed by this Ed25519 public key (PEM)")
    _add_client_credentials(models_parser)
    models_parser.set_defaults(handler=cmd_models)

    report = commands.add_parser("report", help=cmd_report.__doc__, description=cmd_report.__doc__)
    report.add_argument("run_dir", help="a run directory")
    report.add_argument("--no-open", dest="open", action="store_false",
                        help="only write the report, do not open a browser")
    report.set_defaults(handler=cmd_report, loads_tensorflow=False)

    watch = commands.add_parser("monitor", help=cmd_monitor.__doc__, description=cmd_monitor.__doc__)
    watch.add_argument("--model-base-path", required=True, metavar="DIR",
                       help="the model's version directories (as tfbig serve --model_base_path)")
    watch.add_argument("--log-dir", required=True, metavar="DIR", help="the server's request log directory")
    watch.add_argument("--model-name", metavar="NAME",
                       help="the served model's name (default: the base path's last directory)")
    watch.add_argument("--version", type=int, metavar="N",
                       help="only the traffic served by version N (default: each version that served)")
    watch.add_argument("--since", metavar="TIME", help="ISO 8601, epoch seconds, or -DURATION (write --since=-1d)")
    watch.add_argument("--until", metavar="TIME", help="as --since; also where the drift windows end "
                       "(default: now)")
    watch.add_argument("--window", default="1h", metavar="DURATION",
                       help="drift: the latest window against the one before it (default 1h)")
    watch.add_argument("--min-count", type=int, default=50, metavar="N",
                       help="values a side needs before a distance is computed (default 50)")
    watch.add_argument("--thresholds", metavar="FILE", help="YAML or JSON: {feature or glob: {linf, jsd, nad}}")
    watch.add_argument("--output", default="monitor", metavar="DIR",
                       help="where monitor.json and monitor.html go (default ./monitor)")
    watch.add_argument("--prometheus-textfile", metavar="PATH",
                       help="also write the distances for node_exporter's textfile collector (*.prom)")
    watch.set_defaults(handler=cmd_monitor)

    data = commands.add_parser("data", help="prepare training data: tfbig data prepare ...",
                               description="Prepare training data.")
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    prepare = data_commands.add_parser("prepare", help=cmd_data_prepare.__doc__,
                                       description=cmd_data_prepare.__doc__)
    prepare.add_argument("paths", nargs="+", metavar="PATH",
                         help="files, globs or directories of .txt, .md, .py, .jsonl (or .gz of them)")
    prepare.add_argument("--output", required=True, metavar="DIR", help="the dataset directory to write")
    prepare.add_argument("--tokenizer", choices=("bpe", "unigram", "byte"),
                         help="SentencePiece BPE (default) or unigram, trained on the corpus; or bytes")
    prepare.add_argument("--vocab-size", type=int, metavar="N", help="SentencePiece vocabulary size (default 8192)")
    prepare.add_argument("--special-tokens", nargs="+", metavar="TOKEN",
                         help="strings that always encode as one id each, e.g. '<|user|>'")
    prepare.add_argument("--eval-fraction", type=float, metavar="F",
                         help="share of documents held out for eval, chosen by content (default 0.02)")
    prepare.add_argument("--text-field", metavar="FIELD", help="the text of a .jsonl line (default text)")
    prepare.add_argument("--sample-bytes", type=int, metavar="N",
                         help="text the tokenizer trains on, chosen by content hash (default 32 MiB)")
    prepare.add_argument("--workers", type=int, metavar="N", help="tokenizing processes (default: all cores)")
    prepare.set_defaults(handler=cmd_data_prepare, loads_tensorflow=False)
    service = data_commands.add_parser("service", help=cmd_data_service.__doc__,
                                       description=cmd_data_service.__doc__)
    roles = service.add_subparsers(dest="role", metavar="ROLE", required=True)
    dispatcher = roles.add_parser("dispatcher", help="hand out the jobs of training runs")
    dispatcher.add_argument("--port", type=int, default=0, help="port to serve on (default: any "
                            "free port, printed at start)")
    data_worker = roles.add_parser("worker", help="run input pipelines for a dispatcher")
    data_worker.add_argument("--dispatcher", required=True, metavar="HOST:PORT",
                             help="the dispatcher's address (grpc://HOST:PORT or HOST:PORT)")
    data_worker.add_argument("--host", default="localhost",
                             help="the name training tasks reach this worker by (default "
                                  "localhost; on a real cluster, this machine's name)")
    data_worker.add_argument("--port", type=int, default=0, help="port to serve on (default: "
                             "any free port)")
    service.set_defaults(handler=cmd_data_service)

    launch = commands.add_parser("launch", help=cmd_launch.__doc__, description=cmd_launch.__doc__)
    launch.add_argument("--workers", type=int, default=2, help="worker tasks (default 2)")
    launch.add_argument("--ps", type=int, default=0, help="parameter-server tasks; with any, "
                        "a chief task coordinates (ParameterServerStrategy)")
    launch.add_argument("--evaluator", action="store_true", help="also an evaluator task")
    launch.add_argument("--data-service-workers", type=int, default=0, metavar="N",
                        help="also a tf.data service dispatcher and N tf.data workers; the "
                             "training tasks read their input through it")
    launch.add_argument("--max-restarts", type=int, default=0,
                        help="restart the whole cluster this often after a failure")
    launch.add_argument("--grace-period", type=float, default=10.0, metavar="SECONDS",
                        help="between SIGTERM and SIGKILL when stopping tasks (default 10)")
    launch.add_argument("--print-tf-config", action="store_true",
                        help="print each task's TF_CONFIG and exit")
    launch.add_argument("--k8s-manifest", action="store_true",
                        help="print a Kubernetes manifest for this cluster and exit")
    launch.add_argument("--image", default="tfbig:latest", help="image for --k8s-manifest")
    launch.add_argument("--name", default="tfbig-train", help="name for --k8s-manifest")
    launch.add_argument("task_command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    launch.set_defaults(handler=cmd_launch, loads_tensorflow=False)
    parser.commands = commands.choices
    for command in commands.choices.values():  # `tfbig CMD ... --verbose` as well
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="show TensorFlow's own start-up logs (also: TFBIG_LOG=1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's parser: `tfbig CMD: error: ...`
        parser.commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        # What needs no TensorFlow is checked before it loads (seconds): the config.
        if "config" in vars(args):
            args.loaded_config = _load(args)
        if getattr(args, "loads_tensorflow", True):
            import_tensorflow(verbose=args.verbose or verbose_from_env())
        return args.handler(args)
    except TfbigError as e:
        print(f"tfbig {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        # An interrupted export leaves no version (it is staged); a run resumes.
        hint = ("; resume from the last checkpoint by running the same command again"
                if args.command == "train" else "; nothing was written")
        print(f"tfbig {args.command}: error: interrupted{hint}", file=sys.stderr)
        return 130  # 128 + SIGINT, as shells report a Ctrl-C


if __name__ == "__main__":
    sys.exit(main())
