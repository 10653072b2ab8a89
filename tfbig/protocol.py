"""The names TF Serving's protocol and tfbig's signatures share, each spelled once.

The exporter writes them into every SavedModel (`tfbig.export.signatures`);
the client, the embedded server, `tfbig predict`, the pipeline's smoke query
and a distillation teacher loaded from a SavedModel read them. The signature
key and the method names are TF Serving's own (TensorFlow has them as
`tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY` and `*_METHOD_NAME`). This
module imports nothing, so the command line can use it before TensorFlow loads.
"""

# The signature of a request that names none.
DEFAULT_SIGNATURE = "serving_default"
# A GPT's text-in, text-out signature (see tfbig.export.generate).
GENERATE_SIGNATURE = "generate"
# Its inputs, in the order generate_start takes them (text: one string there).
GENERATE_INPUTS = ("text", "max_new_tokens", "temperature", "top_k", "seed")
# The one field of GetModelMetadata TF Serving answers: the SignatureDefs.
SIGNATURE_DEF_FIELD = "signature_def"

# The fields of TF Serving's REST API bodies ("RESTful API" in its docs): a
# request names its signature and gives rows (`instances`) or columns
# (`inputs`); predict answers rows as `predictions`, columns as `outputs`;
# classify and regress take `examples` (and a shared `context`) and answer
# `results`; any failure is `{"error": message}`.
REST_SIGNATURE_NAME = "signature_name"
REST_INSTANCES = "instances"
REST_INPUTS = "inputs"
REST_PREDICTIONS = "predictions"
REST_OUTPUTS = "outputs"
REST_EXAMPLES = "examples"
REST_CONTEXT = "context"
REST_RESULTS = "results"
REST_ERROR = "error"

# A signature's method name: TF Serving sends Classify and Regress requests
# only to signatures with the matching one.
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# The input of every tfbig signature but `generate` (and the tf.Example
# feature that `classify` and `regress` parse).
INPUT_KEY = "inputs"
# The output of `serving_default`.
LOGITS = "logits"
# The outputs TF Serving's Classify API reads (labels, and their scores) and
# the one its Regress API reads.
CLASSES = "classes"
SCORES = "scores"
OUTPUTS = "outputs"

# tfbig's extension: a GPT's SavedModel also carries these two functions
# (attributes of its root, not signatures), which generate one token per call
# for `:generate_stream` (see tfbig.export.stream).
GENERATE_START_FUNCTION = "generate_start"
GENERATE_NEXT_FUNCTION = "generate_next"

# Bearer tokens (RFC 6750), as the embedded server checks them and the client sends them: the
# HTTP header, also the gRPC metadata key (gRPC keys are lower case; HTTP's are any case), and
# the scheme named in it, `authorization: Bearer TOKEN`.
AUTHORIZATION_HEADER = "authorization"
BEARER_SCHEME = "Bearer"
# Where `tfbig predict` and `tfbig models ... --server` find a token when --token-file is not given.
TOKEN_ENV = "TFBIG_SERVING_TOKEN"

# tfbig's extension of the PredictionLog records its request logs hold (see
# tfbig.serving.request_log): each record also carries a `tfbig.serving.RequestOutcome`
# (status code, error message, latency, protocol, time in microseconds) under this
# field number of PredictionLog, which TF Serving's own PredictionLog leaves unused,
# so the record still parses as a plain PredictionLog (the field is skipped as unknown).
REQUEST_OUTCOME_FIELD = 5000
