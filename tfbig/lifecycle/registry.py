"""A TF Serving model base path as a registry: versions, validations, labels, history.

Labels live where TF Serving reads them: the model's entry in a
`models.config` (`ModelServerConfig` text proto) that a server started with
`--model_config_file=... --model_config_file_poll_wait_seconds=N` polls. The
entry's version policy is `specific` with exactly the labelled versions, so
the server loads what is labelled and unloads the rest. tfbig's own record,
`lifecycle.json`, holds what TF Serving has no place for: each version's
validation result (and who ran it), every label's history (which is what
`rollback` walks back) and `events`, an append-only audit trail: who (user and
host) promoted, rolled back or pruned what, and when (`tfbig models history`).
Both files sit in the base path, where TF Serving ignores anything that is not
an integer directory; both are written atomically under a lock.

TF Serving assigns a label only to a version it has loaded. Moving a label on
a live server therefore takes three configs: load the new version next to the
old, move the labels, unload what no label holds. Given the server's address,
each is pushed (`HandleReloadConfigRequest`) and awaited, so requests by label
never meet a version that is not serving. Without one, only the final config
is written, for the next server start or poll.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import getpass
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time

from tensorflow_serving.config import model_server_config_pb2

from tfbig.errors import UsageError
from tfbig.files import write_json
from tfbig.serving.client import Client, Credentials
from tfbig.serving.config_files import read_text_proto, write_text_proto
from tfbig.serving.errors import ServingError

CONFIG_FILE = "models.config"
RECORD_FILE = "lifecycle.json"
LOCK_FILE = ".lifecycle.lock"
RECORD_FORMAT = "tfbig-lifecycle/1"
_LABEL = re.compile(r"^[a-z][a-z0-9_-]*$")
SERVER_WAIT_S = 300.0


class LifecycleError(UsageError, ValueError):
    """A lifecycle action cannot be done as asked; the message says why and what to do."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _user() -> str:
    """The login name (getpass reads $LOGNAME, $USER, ... then the password database);
    the numeric uid where neither knows one, as in a container run under an arbitrary uid."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return str(os.getuid())


def _who() -> dict:
    """When, by whom and on which host: what every entry of lifecycle.json carries."""
    return {"time": _now(), "user": _user(), "host": socket.gethostname()}


def audit_event(action: str, **fields) -> dict:
    """One entry of the audit trail: what was done, when, by whom, on which host."""
    return {"action": action, **fields, **_who()}


def check_label(label: str) -> str:
    if not _LABEL.match(label or ""):
        raise LifecycleError(f"label {label!r}: use lower-case letters, digits, '-' and '_', "
                             f"starting with a letter (e.g. stable, canary)")
    return label


def version_fingerprint(path: str) -> str:
    """What a validation vouches for: every file's name, size and modification time.

    Cheap enough to check on every promote even for a large model (no file is
    read), and any edit, copy or truncation after the validation changes it.
    """
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            stat = os.stat(os.path.join(root, name))
            relative = os.path.relpath(os.path.join(root, name), path)
            digest.update(f"{relative}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


class ModelRegistry:
    """The versions of one model base path and their lifecycle."""

    def __init__(self, base_path: str, *, model_name: str | None = None,
                 config_file: str | None = None):
        self.base_path = os.path.abspath(base_path)
        if not os.path.isdir(self.base_path):
            raise LifecycleError(f"model base path {base_path!r} does not exist; export a version "
                                 f"into it first (tfbig export RUN_DIR --model-base-path {base_path})")
        self.config_file = os.path.abspath(config_file or os.path.join(self.base_path, CONFIG_FILE))
        self.model_name = model_name or self._configured_name() or os.path.basename(self.base_path)
        self.record_file = os.path.join(self.base_path, RECORD_FILE)

    # --- reading ---------------------------------------------------------------

    def versions(self) -> list[int]:
        from tfbig.export.versions import existing_versions

        return existing_versions(self.base_path)

    def version_path(self, version: int) -> str:
        path = os.path.join(self.base_path, str(version))
        if not os.path.isdir(path):
            raise LifecycleError(f"version {version} does not exist in {self.base_path} "
                                 f"(versions: {', '.join(map(str, self.versions())) or 'none'})")
        return path

    def labels(self) -> dict[str, int]:
        entry = self._entry(self._read_config())
        return dict(entry.version_labels) if entry is not None else {}

    def record(self) -> dict:
        try:
            with open(self.record_file, encoding="utf-8") as f:
                record = json.load(f)
        except FileNotFoundError:
            record = {}
        except ValueError as error:
            raise LifecycleError(f"{self.record_file} is not valid JSON ({error}); restore it or "
                                 f"remove it to start the history afresh") from None
        record.setdefault("format", RECORD_FORMAT)
        record.setdefault("validations", {})
        record.setdefault("label_history", {})
        record.setdefault("events", [])
        return record

    def history(self) -> list[dict]:
        """The audit trail, oldest first: label moves and prunes (see audit_event)."""
        return self.record()["events"]

    def validation(self, version: int) -> dict | None:
        """The validation of `version` as it is now; None if never validated or changed since."""
        found = self.record()["validations"].get(str(version))
        if found and found.get("fingerprint") == version_fingerprint(self.version_path(version)):
            return found
        return None

    def rows(self) -> list[dict]:
        """One row per version for `tfbig models list`, newest first."""
        from tfbig.export.manifest import read_manifest

        labels = self.labels()
        rows = []
        for version in reversed(self.versions()):
            path = os.path.join(self.base_path, str(version))
            manifest = read_manifest(path) or {}
            validation = self.validation(version)
            rows.append({
                "version": version,
                "labels": sorted(label for label, v in labels.items() if v == version),
                "validated": None if validation is None else validation["passed"],
                "created": manifest.get("created", ""),
                "step": manifest.get("training", {}).get("step"),
                "eval": manifest.get("training", {}).get("eval_metrics", {}),
                "size_bytes": _tree_bytes(path),
            })
        return rows

    # --- changing --------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        with open(os.path.join(self.base_path, LOCK_FILE), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def record_validation(self, version: int, result: dict) -> None:
        with self._locked():
            record = self.record()
            record["validations"][str(version)] = {
                **result, "fingerprint": version_fingerprint(self.version_path(version)), **_who()}
            self._write_record(record)

    def promote(self, version: int, label: str = "stable", *, server: str | None = None,
                credentials: Credentials | None = None) -> dict[str, int]:
        """Point `label` at `version`, which must have passed validation as it is now."""
        check_label(label)
        validation = self.validation(version)
        if validation is None or not validation["passed"]:
            why = "failed validation" if validation else "has not been validated as it is now"
            raise LifecycleError(f"version {version} {why}; run `tfbig models verify "
                                 f"--model-base-path {self.base_path} {version}` and promote it "
                                 f"once it passes")
        with self._locked():
            labels = self.labels()
            if labels.get(label) == version:
                return labels
            record = self.record()
            self._move(record, label, version, labels.get(label), server=server, credentials=credentials,
                       action="promote")
            record["label_history"].setdefault(label, []).append(version)
            self._write_record(record)
            return self.labels()

    def rollback(self, label: str = "stable", *, server: str | None = None,
                 credentials: Credentials | None = None) -> dict[str, int]:
        """Point `label` back at the version it held before its current one."""
        check_label(label)
        with self._locked():
            labels = self.labels()
            record = self.record()
            history = record["label_history"].get(label, [])
            if label not in labels:
                raise LifecycleError(f"no version is labelled {label!r} in {self.config_file}")
            if len(history) < 2 or history[-1] != labels[label]:
                raise LifecycleError(f"{label!r} has no earlier version to roll back to "
                                     f"(history: {history or 'empty'})")
            previous = history[-2]
            self.version_path(previous)
            self._move(record, label, previous, labels[label], server=server, credentials=credentials,
                       action="rollback")
            history.pop()
            self._write_record(record)
            return self.labels()

    def prune_old(self, keep: int, *, dry_run: bool = False) -> list[int]:
        """Delete all but the newest `keep` versions, never a labelled one or a rollback target."""
        if keep < 1:
            raise LifecycleError(f"--keep must be at least 1, got {keep}")
        with self._locked():
            record = self.record()
            protected = set(self.labels().values())
            protected |= {history[-2] for history in record["label_history"].values() if len(history) > 1}
            removable = [v for v in self.versions()[:-keep] if v not in protected]
            if dry_run:
                return removable
            for version in removable:
                _remove_atomically(os.path.join(self.base_path, str(version)))
                record["validations"].pop(str(version), None)
            if removable:
                record["events"].append(audit_event("prune-old", removed=removable))
                self._write_record(record)
            return removable

    def _move(self, record: dict, label: str, version: int, previous: int | None, *,
              server: str | None, credentials: Credentials | None, action: str) -> None:
        old = self.labels()
        new = {**old, label: version}
        if server:
            self._roll_over(old, new, server, credentials or Credentials())
        else:
            self._write_config(new)
        record["events"].append(audit_event(action, label=label, version=version, previous=previous))

    def _roll_over(self, old: dict[str, int], new: dict[str, int], server: str, credentials: Credentials) -> None:
        """Load, relabel, unload: three configs, each awaited on the live server (with the
        token and certificates it asks for)."""
        both = set(old.values()) | set(new.values())
        phases = [(old, both), (new, both), (new, set(new.values()))]
        with Client(server, timeout=30.0, **credentials.client_kwargs()) as client:
            for index, (labels, versions) in enumerate(phases):
                config = self._write_config(labels, versions)
                try:
                    client.reload_config(config)
                    self._await(client, versions)
                except (ServingError, LifecycleError) as error:
                    if index == 0:  # the new version never served: put the old config back
                        client.reload_config(self._write_config(old))
                    raise LifecycleError(f"the server at {server} did not take the new labels: "
                                         f"{getattr(error, 'message', error)}") from None

    def _await(self, client: Client, versions: set[int]) -> None:
        """Until every version in `versions` is AVAILABLE; a reload that returned OK has
        already applied its labels (TF Serving checks them against loaded versions)."""
        deadline = time.monotonic() + SERVER_WAIT_S
        while True:
            states = {s["version"]: s for s in client.status(self.model_name)}
            failed = [states[v] for v in versions if v in states and states[v]["state"] == "END"
                      and states[v]["error_message"]]
            if failed:
                raise LifecycleError(f"version {failed[0]['version']} failed to load: "
                                     f"{failed[0]['error_message']}")
            if all(states.get(v, {}).get("state") == "AVAILABLE" for v in versions):
                return
            if time.monotonic() > deadline:
                raise LifecycleError(f"versions {sorted(versions)} were not all AVAILABLE after "
                                     f"{SERVER_WAIT_S:g} s")
            time.sleep(0.2)

    # --- files -----------------------------------------------------------------

    def _read_config(self) -> model_server_config_pb2.ModelServerConfig:
        if not os.path.exists(self.config_file):
            return model_server_config_pb2.ModelServerConfig()
        return read_text_proto(self.config_file, model_server_config_pb2.ModelServerConfig(),
                               "model_config_file")

    def _entry(self, config) -> model_server_config_pb2.ModelConfig | None:
        for model in config.model_config_list.config:
            if os.path.abspath(model.base_path) == self.base_path:
                return model
        return None

    def _configured_name(self) -> str | None:
        entry = self._entry(self._read_config())
        return entry.name if entry is not None else None

    def _write_config(self, labels: dict[str, int], versions: set[int] | None = None):
        """This model's entry: the `versions` (default: the labelled ones) and `labels`."""
        config = self._read_config()
        entry = self._entry(config) or config.model_config_list.config.add()
        entry.name = self.model_name
        entry.base_path = self.base_path
        entry.model_platform = "tensorflow"
        entry.model_version_policy.specific.ClearField("versions")
        entry.model_version_policy.specific.versions.extend(
            sorted(set(labels.values()) if versions is None else versions))
        entry.ClearField("version_labels")
        for label, version in sorted(labels.items()):
            entry.version_labels[label] = version
        write_text_proto(config, self.config_file)
        return config

    def _write_record(self, record: dict) -> None:
        write_json(self.record_file, record)


def _tree_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, files in os.walk(path) for name in files)


def _remove_atomically(path: str) -> None:
    """Rename out of the version namespace first: a server never sees half a version."""
    retired = tempfile.mkdtemp(prefix=".retired-", dir=os.path.dirname(path))
    os.rename(path, os.path.join(retired, os.path.basename(path)))
    shutil.rmtree(retired, ignore_errors=True)


def format_history(events: list[dict]) -> str:
    """`ModelRegistry.history()` as the table `tfbig models history` prints (entries written
    before the trail named users show '-')."""
    lines = [f"{'TIME':<25} {'ACTION':<9} {'LABEL':<10} {'VERSION':>7}  {'PREVIOUS':>8}  USER@HOST"]
    for event in events:
        version = event.get("version", ",".join(map(str, event.get("removed", []))) or "-")
        who = f"{event['user']}@{event['host']}" if "user" in event else "-"
        previous = event.get("previous")
        lines.append(f"{event.get('time', '-'):<25} {event.get('action', '-'):<9} "
                     f"{event.get('label') or '-':<10} {version!s:>7}  "
                     f"{'-' if previous is None else previous!s:>8}  {who}")
    return "\n".join(lines)


def format_versions(rows: list[dict]) -> str:
    """`ModelRegistry.rows()` as the table `tfbig models list` prints."""
    lines = [f"{'VERSION':>7}  {'LABELS':<16} {'VALIDATED':<9}  {'STEP':>6}  {'EVAL':<26} {'SIZE':>9}  CREATED"]
    for row in rows:
        validated = {None: "-", True: "yes", False: "FAILED"}[row["validated"]]
        metric = next((f"{k}={row['eval'][k]:.4g}" for k in ("eval_perplexity", "eval_accuracy")
                       if k in row["eval"]), "-")
        lines.append(f"{row['version']:>7}  {','.join(row['labels']) or '-':<16} {validated:<9}  "
                     f"{row['step'] if row['step'] is not None else '-':>6}  {metric:<26} "
                     f"{row['size_bytes'] / 2**20:>7.2f}Mi  {row['created'] or '-'}")
    return "\n".join(lines)
