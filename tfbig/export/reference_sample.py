"""The samples behind a version's reference statistics (`tfbig.export.reference_stats`).

Bounded, so that export stays quick whatever the data set: at most
`MAX_EXAMPLES` rows of each split (the training rows shuffled with a fixed
seed, the eval rows in order), the model's answers on at most
`MAX_RESPONSE_TOKENS` eval tokens for a language model (its logits cost
vocabulary-size floats per token), and `GENERATE_PROMPTS` generated
continuations. The answers come from the very tf.functions that are saved as
signatures, on the model in memory, so they are what the served version says.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfbig.export import signatures as sig
from tfbig.export.reference_stats import (
    BINS, QUANTILE_LEVELS, TOP_K, categorical_feature, numeric_feature, top_categories,
)

MAX_EXAMPLES = 512
MAX_RESPONSE_TOKENS = 8192
# Beyond this many elements per example (a large image), one feature pools them all.
MAX_ELEMENT_FEATURES = 1024
GENERATE_PROMPTS = 16
GENERATE_TOKENS = 8
# Logits held at once while answering (floats): a language model has vocabulary-many per token.
LOGITS_PER_BATCH = 1 << 22
PROBABILITY_EDGES = np.linspace(0.0, 1.0, BINS + 1)


def reference_stats(trained, functions: dict, codec) -> dict:
    """The statistics of `trained`'s data and answers, as `write_reference_stats` takes them."""
    spec = trained.source.spec
    train_x, train_y = _rows(trained.source.train, shuffle=True)
    eval_x, eval_y = _rows(trained.source.eval, shuffle=False)
    features = _input_features(spec, {"train": train_x, "eval": eval_x})
    if spec.task == "classification":
        classes = [str(i) for i in range(spec.num_classes)]
        features["label"] = categorical_feature({"train": train_y, "eval": eval_y}, categories=classes,
                                                source="label")
        answers = _answers(functions[sig.PREDICT], eval_x, spec.num_classes, keep_scores=True)
        features.update(_class_features(*answers, classes))
        examples = {"train": len(train_x), "eval": len(eval_x)}
    else:
        responded = eval_x[: max(1, MAX_RESPONSE_TOKENS // eval_x.shape[1])]
        answers = _answers(functions[sig.PREDICT], responded, spec.num_classes * responded.shape[1])
        features.update(_token_features(*answers[:2], spec.num_classes))
        examples = {"train": len(train_x), "eval": len(eval_x), "eval_responses": len(responded)}
        if sig.GENERATE in functions:
            prompts = _prompts(eval_x, codec, trained.config.model.max_len)
            features.update(_generate_features(functions[sig.GENERATE], prompts, spec.num_classes))
            examples["generate_prompts"] = len(prompts)
    return {"task": spec.task, "examples": examples, "bins": BINS,
            "quantile_levels": list(QUANTILE_LEVELS), "top_k": TOP_K, "features": features}


def _rows(split, *, shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
    dataset = split.make_dataset(batch_size=MAX_EXAMPLES, shuffle=shuffle, seed=0, repeat=False,
                                 drop_remainder=False)
    inputs, targets = next(iter(dataset))
    return inputs.numpy(), targets.numpy()


def _request(tensor: str, signature: str = sig.PREDICT, **where) -> dict:
    return {"source": "request", "signature": signature, "tensor": tensor, **where}


def _response(tensor: str, signature: str = sig.PREDICT, **where) -> dict:
    return {"source": "response", "signature": signature, "tensor": tensor, **where}


def _input_features(spec, splits: dict[str, np.ndarray]) -> dict:
    """Token ids as one categorical feature; numbers per element of an example, or pooled."""
    if spec.input_dtype == "int32":
        return {"tokens": categorical_feature(splits, categories=_vocabulary(splits["train"], spec),
                                              **_request(sig.INPUT_KEY))}
    rows = {name: x.reshape(len(x), -1) for name, x in splits.items()}
    elements = rows["train"].shape[1]
    if elements > MAX_ELEMENT_FEATURES:
        return {f"{sig.INPUT_KEY}[*]": numeric_feature(rows, **_request(sig.INPUT_KEY, element="*"))}
    return {f"{sig.INPUT_KEY}[{i}]": numeric_feature({name: x[:, i] for name, x in rows.items()},
                                                     **_request(sig.INPUT_KEY, element=i))
            for i in range(elements)}


def _vocabulary(train_tokens: np.ndarray, spec) -> list[str]:
    """Every id when the vocabulary is small enough, else the training sample's most frequent."""
    return _ids(spec.num_classes) or top_categories(train_tokens)


def _answers(predict, inputs: np.ndarray, logits_per_row: int, *, keep_scores: bool = False):
    """`serving_default` on `inputs`, reduced batch by batch (a language model's logits are
    vocabulary-wide): the predicted ids, their softmax scores, and all scores if asked."""
    rows = max(1, LOGITS_PER_BATCH // max(1, logits_per_row))
    predicted, top, scores = [], [], []
    for start in range(0, len(inputs), rows):
        logits = predict(tf.constant(inputs[start:start + rows]))[sig.LOGITS].numpy()
        probabilities = _softmax(logits)
        predicted.append(logits.argmax(axis=-1))
        top.append(probabilities.max(axis=-1))
        if keep_scores:
            scores.append(probabilities)
    return (np.concatenate(predicted), np.concatenate(top),
            np.concatenate(scores) if keep_scores else None)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _class_features(predicted, top, scores, classes: list[str]) -> dict:
    """Predicted classes and scores: what `classify` answers (`classes`, `scores`) and
    `regress` (`outputs`, the top score), and serving_default's logits reduced the same way."""
    features = {
        "predicted_class": categorical_feature({"eval": predicted}, categories=classes,
                                               **_response(sig.LOGITS, derived="argmax")),
        "score": numeric_feature({"eval": top}, edges=PROBABILITY_EDGES,
                                 **_response(sig.LOGITS, derived="max_softmax")),
    }
    if len(classes) <= MAX_ELEMENT_FEATURES:
        for k in range(len(classes)):
            features[f"scores[{k}]"] = numeric_feature(
                {"eval": scores[:, k]}, edges=PROBABILITY_EDGES,
                **_response("scores", signature=sig.CLASSIFY, element=k))
    return features


def _token_features(predicted, top, vocab_size: int) -> dict:
    """A language model's next-token predictions at every position, and their confidence."""
    return {
        "predicted_token": categorical_feature({"eval": predicted}, categories=_ids(vocab_size),
                                               **_response(sig.LOGITS, derived="argmax")),
        "score": numeric_feature({"eval": top}, edges=PROBABILITY_EDGES,
                                 **_response(sig.LOGITS, derived="max_softmax")),
    }


def _ids(vocab_size: int) -> list[str] | None:
    """Every token id of a small vocabulary; None (the sample's most frequent) for a large one."""
    return [str(i) for i in range(vocab_size)] if vocab_size <= TOP_K else None


def _prompts(eval_tokens: np.ndarray, codec, max_len: int) -> list[bytes]:
    """Prefixes of eval rows, of lengths drawn evenly from 1 to what leaves room to generate."""
    longest = max(1, min(eval_tokens.shape[1], max_len - GENERATE_TOKENS))
    lengths = np.random.default_rng(0).integers(1, longest + 1, size=GENERATE_PROMPTS)
    return [codec.prompt(eval_tokens[i % len(eval_tokens), :n]) for i, n in enumerate(lengths)]


def _generate_features(generate, prompts: list[bytes], vocab_size: int) -> dict:
    """Prompt and output lengths (UTF-8 bytes: what a log shows without a tokenizer) and the
    generated tokens of greedy `generate` on `prompts`."""
    outputs = generate(text=tf.constant(prompts), max_new_tokens=tf.constant(GENERATE_TOKENS),
                       temperature=tf.constant(0.0), top_k=tf.constant(0),
                       seed=tf.constant(0, tf.int64))
    return {
        "prompt_length": numeric_feature({"eval": [len(p) for p in prompts]},
                                         **_request("text", sig.GENERATE, derived="utf8_bytes")),
        "output_length": numeric_feature({"eval": [len(t) for t in outputs["text"].numpy()]},
                                         **_response("text", sig.GENERATE, derived="utf8_bytes")),
        "generated_token": categorical_feature({"eval": outputs["tokens"].numpy()}, categories=_ids(vocab_size),
                                               **_response("tokens", sig.GENERATE)),
    }
