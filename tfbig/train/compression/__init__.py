"""Compression methods: what TF Model Optimization changes in a model and in training.

A method wraps the trained model for fine-tuning (`wrap`), acts inside the
Trainer's compiled loop through `tfbig.train.hooks` (`hooks`) and turns the
fine-tuned model into the one to export (`finalize`): pruning (`prune`),
quantization-aware training (`quantize`), weight clustering (`cluster`) and
distillation (`distill`); `methods.make_method` picks the config's.

They sit below both of their users: `tfbig.compress` fine-tunes a run with
them and measures the result, and `tfbig.export.restore` rebuilds a
compressed run's model with them, so export never imports `tfbig.compress`.
TF-MOT itself is imported only by the module of the method in use.
"""
