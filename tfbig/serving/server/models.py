"""Which versions of which models are loaded, and the lifecycle of each.

The embedded server's counterpart of TF Serving's ServerCore + AspiredVersions
manager. Each model's base path is scanned for integer subdirectories; the
version policy (latest N / all / specific) decides which should be served;
new ones are loaded, checked against their tfbig manifest (and, given a verify
key, its signature: see tfbig.export.signing), warmed up and only then made
AVAILABLE, and versions that fall out of the policy are unloaded
after the requests holding them have finished. Loading a new version before
unloading the old one, and counting in-flight requests per version, is what
lets a version roll over under load without a failed request.

Loads and unloads all run on one thread of the manager's own, whichever thread
asks (startup, the poll thread, a ReloadConfig request on any of the gRPC
handler threads), as TF Serving's manager loads on its own threads. glibc gives
each thread that allocates under contention an arena of its own (up to eight
per core), and loading and warming a SavedModel allocates and frees a lot in
TensorFlow: done on whichever thread asked, successive versions left freed
memory held in every arena, and RSS rose about 0.4 MB per version loaded (the
digits CNN, loads spread over 16 threads). After each unload the loader thread
also collects the version's cyclic garbage and trims the heaps
(`allocator.release_free_memory`): otherwise its graphs waited for Python's
collector, and the memory they held for glibc: in a 40-minute soak (a version
every 10 s) the heap's memory in use swung between 124 and 200 MB and the heap
grew from 202 to 219 MB; with the release, 114-137 MB and 134-150 MB.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import threading
import time
import types

import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from tfbig.atoi import simple_atoi
from tfbig.export.manifest import verify_manifest
from tfbig.export.signing import signature_problem
from tfbig.serving.config_files import check_models
from tfbig.serving.errors import ServingError, invalid_argument, not_found
from tfbig.serving.options import SERVE_TAG
from tfbig.serving.server.allocator import release_free_memory
from tfbig.serving.server.batching import Batcher
from tfbig.serving.server.servable import Servable

# ModelVersionStatus.State's values as plain attributes: the proto enum wrapper resolves
# each one through __getattr__ (a microsecond), and every request looks up several.
State = types.SimpleNamespace(**dict(get_model_status_pb2.ModelVersionStatus.State.items()))
log = logging.getLogger("tfbig.serving")


@dataclasses.dataclass
class LoadedVersion:
    """One version's state; `servable` is set while it is AVAILABLE."""

    version: int
    state: int = State.START
    error: ServingError | None = None
    servable: Servable | None = None
    batcher: Batcher | None = None
    in_flight: int = 0
    failed_loads: int = 0  # in a row; a version that loads starts again from 0
    retry_at: float = 0.0  # time.monotonic() after which a failed load may be tried again


def version_dirs(base_path: str) -> dict[int, str]:
    """Version subdirectories of a base path that really lie inside it: those whose names
    TF Serving reads as int64 version numbers (file_system_storage_path_source.cc)."""
    try:
        names = os.listdir(base_path)
    except OSError:
        return {}
    root = os.path.realpath(base_path)
    versions = {}
    for name in names:
        path = os.path.join(base_path, name)
        version = simple_atoi(name)
        if version is not None and os.path.isdir(path) and os.path.dirname(os.path.realpath(path)) == root:
            versions[version] = path
    return versions


def aspired_versions(model: model_server_config_pb2.ModelConfig, found: list[int]) -> set[int]:
    policy = model.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(found)
    if kind == "specific":
        return set(policy.specific.versions) & set(found)
    count = policy.latest.num_versions if kind == "latest" else 1
    return set(sorted(found)[-count:])


def spec_text(spec: model_pb2.ModelSpec) -> str:
    """How TF Serving names a request in its errors: Latest(name) / Specific(name, 3)."""
    if spec.HasField("version"):
        return f"Specific({spec.name}, {spec.version.value})"
    return f"Latest({spec.name})"


class ModelManager:
    """Loads, serves and unloads model versions according to a ModelServerConfig."""

    def __init__(self, config: model_server_config_pb2.ModelServerConfig, *, batching=None,
                 warmup=None, allow_labels_for_unavailable: bool = False, on_batch=None,
                 load_retries: int = 5, load_retry_interval_s: float = 60.0,
                 saved_model_tags: frozenset[str] = frozenset([SERVE_TAG]), on_change=None,
                 verify_key=None):
        self._config = config
        self._verify_key = verify_key  # an Ed25519PublicKey: load only versions it signed
        self._on_change = on_change  # called after every pass that may have loaded or unloaded
        self._tags = saved_model_tags
        # A version written while the server polls (SavedModel first, variables after) fails
        # its first load; like TF Serving, try it again up to `load_retries` times.
        self._load_retries = load_retries
        self._load_retry_interval_s = load_retry_interval_s
        self._on_batch = on_batch  # (model name, batch size) of every batch run
        self._batching = batching
        self._warmup = warmup
        self._allow_unavailable_labels = allow_labels_for_unavailable
        self._lock = threading.Condition()
        self._reconcile_lock = threading.Lock()
        self._versions: dict[str, dict[int, LoadedVersion]] = {}
        self._loader: concurrent.futures.ThreadPoolExecutor | None = None  # started by the first load
        self._loader_lock = threading.Lock()
        self._loader_thread: int | None = None

    def _on_loader(self, function, *args):
        """`function(*args)` on the manager's loader thread (see the module's docstring), its
        result or exception returned to the calling thread."""
        if threading.get_ident() == self._loader_thread:  # already there (an on_change callback)
            return function(*args)
        with self._loader_lock:
            if self._loader is None:
                self._loader = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="model-loader", initializer=self._mark_loader_thread)
            future = self._loader.submit(function, *args)
        return future.result()

    def _mark_loader_thread(self) -> None:
        self._loader_thread = threading.get_ident()

    # --- configuration ---------------------------------------------------------

    @property
    def config(self) -> model_server_config_pb2.ModelServerConfig:
        return self._config

    def model_names(self) -> list[str]:
        return [m.name for m in self._config.model_config_list.config]

    def apply_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Serve exactly the models of `config` (HandleReloadConfigRequest's semantics)."""
        try:
            check_models(config)
        except ValueError as error:
            raise invalid_argument(str(error)) from None
        self._on_loader(self._apply_config, config)

    def _apply_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        with self._reconcile_lock:
            previous, self._config = self._config, config
            self._reconcile_locked()
            try:
                self.check_labels()
            except ServingError:
                self._config = previous
                self._reconcile_locked()
                raise

    def check_labels(self) -> None:
        for model in self._config.model_config_list.config:
            for label, version in model.version_labels.items():
                entry = self._versions.get(model.name, {}).get(version)
                if not self._allow_unavailable_labels and (entry is None or entry.state != State.AVAILABLE):
                    raise ServingError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"Request to assign label to version {version} of model {model.name}, "
                        f"which is not currently available for inference")

    # --- loading ---------------------------------------------------------------

    def reconcile(self) -> None:
        """One pass over every base path: load what the policies want, unload the rest."""
        self._on_loader(self._reconcile)

    def _reconcile(self) -> None:
        with self._reconcile_lock:
            self._reconcile_locked()

    def _reconcile_locked(self) -> None:
        wanted_models = {m.name: m for m in self._config.model_config_list.config}
        for name in list(self._versions):
            if name not in wanted_models:
                for version in list(self._versions[name]):
                    self._unload(name, version)
        for name, model in wanted_models.items():
            found = version_dirs(model.base_path)
            aspired = aspired_versions(model, list(found))
            current = self._versions.setdefault(name, {})
            for version, entry in current.items():
                if version not in found:  # published again later, it gets every attempt again
                    entry.failed_loads, entry.retry_at = 0, 0.0
            for version in sorted(aspired):
                entry = current.get(version)
                if entry is None or entry.state == State.END and self._may_load_again(entry):
                    self._load(name, version, found[version], 0 if entry is None else entry.failed_loads)
            # Availability first: keep old versions until an aspired one is serving
            # (a new version that fails to load does not take the model down).
            if any(current[v].state == State.AVAILABLE for v in aspired if v in current):
                for version, entry in list(current.items()):
                    if version not in aspired and entry.state == State.AVAILABLE:
                        self._unload(name, version)
        if self._on_change is not None:
            self._on_change()

    def _may_load_again(self, entry: LoadedVersion) -> bool:
        """An unloaded version may be loaded again; one that failed, while it has retries left."""
        return entry.error is None or (entry.failed_loads <= self._load_retries
                                       and time.monotonic() >= entry.retry_at)

    def _load(self, name: str, version: int, path: str, failed_loads: int = 0) -> None:
        entry = LoadedVersion(version, State.LOADING)
        with self._lock:
            self._versions[name][version] = entry
        try:
            self._check_files(name, version, path)
            servable = Servable(name, version, path, self._tags)
            batcher = None
            if self._batching is not None:
                observe = (lambda size: self._on_batch(name, size)) if self._on_batch else None
                batcher = Batcher(servable.run, self._batching, on_batch=observe)
            if self._warmup is not None:
                self._warmup(servable)
        except Exception as error:  # a broken version must not take the server down
            code = error.code if isinstance(error, ServingError) else grpc.StatusCode.UNKNOWN
            message = error.message if isinstance(error, ServingError) else f"{type(error).__name__}: {error}"
            log.error("failed to load version %d of model %s (attempt %d of %d): %s", version, name,
                      failed_loads + 1, self._load_retries + 1, message)
            with self._lock:
                entry.state, entry.error = State.END, ServingError(code, message)
                entry.failed_loads = failed_loads + 1
                entry.retry_at = time.monotonic() + self._load_retry_interval_s
            return
        with self._lock:
            entry.servable, entry.batcher, entry.state = servable, batcher, State.AVAILABLE
        log.info("model %s version %d is AVAILABLE", name, version)

    def _check_files(self, name: str, version: int, path: str) -> None:
        """Refuse a version not signed by the verify key, or whose files differ from its
        manifest (one without a manifest loads, as in TF Serving, unless a key is given)."""
        if self._verify_key is not None:
            problem = signature_problem(path, self._verify_key)
            if problem:
                raise ServingError(grpc.StatusCode.PERMISSION_DENIED,
                                   f"version {version} of model {name} is refused (--verify_key): {problem}")
        problems = verify_manifest(path)
        if problems:
            raise ServingError(grpc.StatusCode.DATA_LOSS,
                               f"version {version} of model {name} does not match its "
                               f"manifest: {'; '.join(problems)}")

    def _unload(self, name: str, version: int) -> None:
        with self._lock:
            entry = self._versions[name][version]
            if entry.state != State.AVAILABLE:
                return
            entry.state = State.UNLOADING
            self._lock.wait_for(lambda: entry.in_flight == 0)
        if entry.batcher is not None:
            entry.batcher.stop()
        with self._lock:
            entry.state, entry.servable, entry.batcher = State.END, None, None
        release_free_memory()
        log.info("model %s version %d unloaded", name, version)

    def unload_all(self) -> None:
        """Unload every version and end the loader thread (a later load starts another)."""
        self._on_loader(self._unload_all)
        with self._loader_lock:
            loader, self._loader, self._loader_thread = self._loader, None, None
        if loader is not None:
            loader.shutdown()

    def _unload_all(self) -> None:
        with self._reconcile_lock:
            for name in list(self._versions):
                for version in list(self._versions[name]):
                    self._unload(name, version)

    # --- serving ---------------------------------------------------------------

    def _resolve(self, spec: model_pb2.ModelSpec) -> LoadedVersion:
        """The version a request names, checked in the order of TF Serving's
        ServerCore::ServableRequestFromModelSpec (server_core.cc)."""
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        versions = self._versions.get(spec.name, {})
        if spec.version_label:
            labels = next((m.version_labels for m in self._config.model_config_list.config
                           if m.name == spec.name), {})
            if spec.version_label not in labels:
                raise invalid_argument(f"Unrecognized servable version label: {spec.version_label}")
            entry = versions.get(labels[spec.version_label])
        elif spec.HasField("version"):
            entry = versions.get(spec.version.value)
        else:
            available = [v for v, e in versions.items() if e.state == State.AVAILABLE]
            entry = versions[max(available)] if available else None
        if entry is None or entry.state != State.AVAILABLE:
            raise not_found(f"Servable not found for request: {spec_text(spec)}")
        return entry

    @contextlib.contextmanager
    def acquire(self, spec: model_pb2.ModelSpec):
        """Hold a version for one request; it is not unloaded until every holder is done."""
        with self._lock:
            entry = self._resolve(spec)
            entry.in_flight += 1
        try:
            yield entry
        finally:
            with self._lock:
                entry.in_flight -= 1
                if entry.state == State.UNLOADING and not entry.in_flight:
                    self._lock.notify_all()  # the unload waiting for this version's last request

    def status(self, spec: model_pb2.ModelSpec) -> list[LoadedVersion]:
        """Versions matching `spec` with their states, newest first, as GetModelStatus reports
        (which ignores a version label: TF Serving answers for every version then)."""
        with self._lock:
            versions = dict(self._versions.get(spec.name, {}))
            if spec.HasField("version"):
                if spec.version.value not in versions:
                    raise not_found(f"Could not find version {spec.version.value} of model {spec.name}")
                return [dataclasses.replace(versions[spec.version.value])]
            if not versions:
                raise not_found(f"Could not find any versions of model {spec.name}")
            return [dataclasses.replace(versions[v]) for v in sorted(versions, reverse=True)]

    def ready(self) -> bool:
        """Every configured model has an AVAILABLE version."""
        with self._lock:
            return all(any(e.state == State.AVAILABLE for e in self._versions.get(name, {}).values())
                       for name in self.model_names())
