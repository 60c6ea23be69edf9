"""Read stargate manifests from YAML files and folders, validated against the models.

Every error names the file, the object (kind/namespace/name, or its position in the file) and the
field path, so that `plan` and the tests can print one line a person can act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from stargate_operator.api import API_VERSION, BY_KIND, GROUP


class ManifestError(ValueError):
    """Invalid input; str() is a complete, single-line-per-problem message."""


@dataclass(frozen=True)
class LoadedObject:
    path: str
    index: int  # position of the document in its file, from 1
    body: dict[str, Any]  # the wire form as read (camelCase), defaults applied, extra status kept

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"].get("namespace") or "default")

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])


def _files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            # Like `kubectl apply -f DIR`: the folder's own files, not its subfolders.
            yield from sorted(
                f for f in p.glob("*") if f.suffix in (".yaml", ".yml", ".json") and f.is_file()
            )
        elif p.exists():
            yield p
        else:
            raise ManifestError(f"{p}: no such file or folder")


def _where(path: Path, index: int, doc: Any) -> str:
    if isinstance(doc, dict):
        raw_meta = doc.get("metadata")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        kind = doc.get("kind", "?")
        name = meta.get("name", f"#{index}")
        ns = meta.get("namespace") or "default"
        return f"{path}: {kind} {ns}/{name} (document {index})"
    return f"{path}: document {index}"


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(object)"


# Pydantic's wording where a person reading kubectl's would expect something else.
_MESSAGES = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
}


def _problem(where: str, err: Any) -> str:
    loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    if err["type"] == "cross_field":
        # A mirrored CEL rule: it names the field it refuses, relative to the model holding the rule.
        loc = (*loc, str(ctx["field"]))
        return f"{where}: field {_field_path(loc)}: {ctx['message']}"
    msg = _MESSAGES.get(err["type"], err["msg"])
    text = f"{where}: field {_field_path(loc)}: {msg}"
    if err["type"] != "missing" and not isinstance(err.get("input"), dict | list):
        text += f" (got {err['input']!r})"
    return text


def validate_document(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate one stargate object; return its wire form with defaults applied.

    Fields are read by their wire (camelCase) names only, as the API server reads them.
    """
    kind = doc.get("kind")
    model = BY_KIND.get(str(kind))
    if model is None:
        allowed = ", ".join(sorted(BY_KIND))
        raise ManifestError(f"{where}: field kind: unknown kind {kind!r} (allowed: {allowed})")
    if doc.get("apiVersion") != API_VERSION:
        raise ManifestError(
            f"{where}: field apiVersion: got {doc.get('apiVersion')!r}, expected {API_VERSION!r}"
        )
    try:
        obj = model.model_validate(doc, by_alias=True, by_name=False)
    except ValidationError as e:
        raise ManifestError("\n".join(_problem(where, err) for err in e.errors())) from None
    body = obj.model_dump(by_alias=True, exclude_none=True, mode="json")
    # Keep metadata exactly as given (creationTimestamp, generation, uid ... matter to the core).
    body["metadata"] = {**doc["metadata"], "namespace": doc["metadata"].get("namespace") or "default"}
    return body


def load_manifests(paths: Iterable[str | Path]) -> list[LoadedObject]:
    """Every stargate object in the given files and folders; other kinds are skipped.

    Raises ManifestError with every problem found, one per line.
    """
    out: list[LoadedObject] = []
    problems: list[str] = []
    for path in _files(paths):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as e:
            problems.append(f"{path}: not valid YAML: {e}".replace("\n", " "))
            continue
        for i, doc in enumerate(docs, start=1):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                problems.append(f"{path}: document {i}: expected a mapping, got {type(doc).__name__}")
                continue
            if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
                items = doc["items"]
            else:
                items = [doc]
            for item in items:
                if not isinstance(item, dict):
                    problems.append(f"{path}: document {i}: expected an object, got {type(item).__name__}")
                    continue
                api_version = str(item.get("apiVersion", ""))
                if not api_version.startswith(GROUP + "/") and item.get("kind") not in BY_KIND:
                    continue  # not ours: Namespaces, ConfigMaps ... are fine in the same file
                where = _where(path, i, item)
                try:
                    out.append(LoadedObject(str(path), i, validate_document(item, where)))
                except ManifestError as e:
                    problems.append(str(e))
    if problems:
        raise ManifestError("\n".join(problems))
    return out
