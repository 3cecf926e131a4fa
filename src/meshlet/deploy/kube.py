"""Kubernetes manifests as ``kubectl apply -f`` reads them, for ``meshlet apply``.

``parse_documents(text, source)`` is pure: multi-document YAML in, validated objects out
(:mod:`meshlet.kube_objects`), or one ConfigError naming the file, the line, the
field path and the object (here on two lines)::

    web.yaml:17: spec.template.spec.containers[0].imagePullSecrets: unknown field
    (in Deployment web)

Empty documents are skipped; a ``v1 List`` (what ``kubectl get -o yaml`` writes) stands
for its ``items``. Input is bounded before it can cost much: at most 1 MiB of text, 1000
documents (and objects), mappings and sequences nested at most 32 deep, and no YAML
anchors or aliases (a "billion laughs" text expands through them; Kubernetes manifests
do not need them). Duplicate keys are refused rather than letting the last one win.

Across the objects of one text, a Service's named ``targetPort`` must be a port of the
Deployment it selects when that Deployment is in the same text; otherwise resolving it
(``Deployment.port_number``) is the caller's.

``read_sources(target)`` is the one function here that does I/O: it reads ``FILE``,
the ``.yaml``/``.yml``/``.json`` files of a ``DIR`` (sorted, not recursive, as kubectl),
or ``-`` (standard input).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, TextIO

import yaml
from pydantic import ValidationError

from meshlet.errors import ConfigError
from meshlet.json_limits import MAX_BYTES, MAX_DEPTH
from meshlet.kube_objects import (
    KINDS,
    Deployment,
    KubeObject,
    KubeObjectBase,
    Loc,
    Service,
    dotted,
    error_message,
    header_problem,
    object_label,
)

MAX_DOCUMENTS = 1000
EXTENSIONS = (".yaml", ".yml", ".json")

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_DOCUMENTS", "KubeObject", "load",
           "parse_documents", "read_sources"]


class _Refused(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


# libyaml's loader where PyYAML has it: about ten times faster than the Python one.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_events(text: str) -> None:
    """Refuse anchors, aliases, nesting beyond MAX_DEPTH and more than MAX_DOCUMENTS
    documents from the parser's event stream, before anything is composed (composing
    recurses once per level, and aliases are what a "billion laughs" text expands)."""
    depth = documents = 0
    for event in yaml.parse(text, Loader=_LOADER):
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(line, "YAML anchors and aliases are not accepted")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Refused(line, f"nested more than {MAX_DEPTH} deep")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > MAX_DOCUMENTS:
                raise _Refused(line, f"more than {MAX_DOCUMENTS} documents")


def _index(node: yaml.Node, path: Loc, out: dict[Loc, int]) -> None:
    """Line of every path in the document; refuses a key given twice in one mapping."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue        # a non-scalar key fails validation at the mapping's line
            line = key.start_mark.line + 1
            if key.value in seen:
                raise _Refused(line, f"{dotted((*path, key.value))}: duplicate key "
                                     f"(first at line {seen[key.value]})")
            seen[key.value] = line
            out[(*path, key.value)] = line
            _index(value, (*path, key.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), out)


def _constructor_problem(exc: ValueError) -> str:
    """What PyYAML's constructor raised, in the user's terms (an integer too long for
    Python's int(), a date that does not exist)."""
    if "integer string conversion" in str(exc):
        return f"an integer of more than {sys.get_int_max_str_digits()} digits"
    return str(exc)


def _documents(text: str, source: str) -> Iterator[tuple[int, Any, dict[Loc, int]]]:
    """(first line, data, line index) of each non-empty document."""
    loader = None
    try:
        _check_events(text)
        loader = _LOADER(text)
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            try:
                data = loader.construct_document(node)
            except ValueError as exc:  # a scalar the constructor cannot make: 2020-13-45
                raise _Refused(node.start_mark.line + 1,
                               f"not valid YAML: {_constructor_problem(exc)}") from None
            if data is None:
                continue
            lines: dict[Loc, int] = {}
            _index(node, (), lines)
            yield node.start_mark.line + 1, data, lines
    except _Refused as exc:
        raise ConfigError(f"{source}:{exc.line}: {exc.message}", "file") from None
    except UnicodeError:    # libyaml encodes the text: a lone surrogate stops it
        raise ConfigError(f"{source}: not valid YAML: the text is not UTF-8", "file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {problem}", "file") from None
    finally:
        if loader is not None:
            loader.dispose()


class _Document:
    """One object's data with where it came from, for errors that point at lines."""

    def __init__(self, source: str, data: Any, lines: dict[Loc, int], prefix: Loc,
                 line: int) -> None:
        self.source, self.data, self.lines, self.prefix, self.line = (
            source, data, lines, prefix, line)

    @property
    def label(self) -> str:
        return object_label(self.data)

    def line_of(self, loc: Loc) -> int:
        full = (*self.prefix, *loc)
        for n in range(len(full), -1, -1):
            if full[:n] in self.lines:
                return self.lines[full[:n]]
        return self.line

    def fail(self, loc: Loc, message: str) -> NoReturn:
        path = dotted((*self.prefix, *loc)) or "document"
        raise ConfigError(f"{self.source}:{self.line_of(loc)}: {path}: {message}{self.label}",
                          path)


def _non_string_key(data: Any, loc: Loc = ()) -> tuple[Loc, object] | None:
    """Where a mapping has a key YAML read as other than a string (``on:``, ``1:``)."""
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                return loc, key
            found = _non_string_key(value, (*loc, key))
            if found is not None:
                return found
    elif isinstance(data, list):
        for i, item in enumerate(data):
            found = _non_string_key(item, (*loc, i))
            if found is not None:
                return found
    return None


def _object(doc: _Document) -> KubeObject:
    data = doc.data
    if not isinstance(data, dict):
        doc.fail((), "expected a Kubernetes object (a mapping with apiVersion and kind)")
    odd = _non_string_key(data)
    if odd is not None:
        doc.fail(odd[0], f"key {odd[1]!r} is not a string: quote it")
    problem = header_problem(data)
    if problem is not None:
        doc.fail(*problem)
    model = KINDS[data["kind"]][1]
    try:
        obj = model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = min(errors, key=lambda e: doc.line_of(tuple(e["loc"])))
        doc.fail(tuple(first["loc"]), error_message(first))
    for loc, message in obj.problems():
        doc.fail(loc, message)
    assert isinstance(obj, KubeObjectBase)
    return obj  # type: ignore[return-value]


def _expand(source: str, line: int, data: Any, lines: dict[Loc, int]) -> Iterator[_Document]:
    """The document, or a List's items."""
    if isinstance(data, dict) and data.get("kind") == "List":
        doc = _Document(source, data, lines, (), line)
        if data.get("apiVersion") != "v1":
            doc.fail(("apiVersion",), f"List is v1, not {data.get('apiVersion')!r}")
        for key in data:
            if key not in ("apiVersion", "kind", "items", "metadata"):
                doc.fail((key,), "unknown field")
        items = data.get("items")
        if not isinstance(items, list):
            doc.fail(("items",), "must be a list of objects")
        for i, item in enumerate(items):
            item_doc = _Document(source, item, lines, ("items", i), line)
            if isinstance(item, dict) and item.get("kind") == "List":
                item_doc.fail(("kind",), "a List inside a List is not accepted")
            yield item_doc
    else:
        yield _Document(source, data, lines, (), line)


def parse_documents(text: str, source: str = "<stdin>") -> list[KubeObject]:
    """Every object of a multi-document YAML text, in order. Pure.

    Raises ConfigError (``field`` is the path) for text beyond the bounds, YAML that does
    not parse, and any unknown kind, apiVersion, field or invalid value."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise ConfigError(f"{source}: is {size} bytes; at most {MAX_BYTES} are allowed",
                          "file")
    objects: list[KubeObject] = []
    docs: list[_Document] = []
    # Every document is read (within the bounds) before any is validated: a text with
    # too many documents is refused as that, whatever its first one holds.
    for line, data, lines in list(_documents(text, source)):
        for doc in _expand(source, line, data, lines):
            if len(objects) == MAX_DOCUMENTS:
                doc.fail((), f"more than {MAX_DOCUMENTS} objects")
            objects.append(_object(doc))
            docs.append(doc)
    _check_target_ports(objects, docs)
    return objects


def _check_target_ports(objects: list[KubeObject], docs: list[_Document]) -> None:
    """A named targetPort must name a port of the Deployments the Service selects here."""
    deployments = [o for o in objects if isinstance(o, Deployment)]
    for obj, doc in zip(objects, docs, strict=True):
        if not isinstance(obj, Service):
            continue
        selected = [d for d in deployments if obj.selects(d)]
        for i, port in enumerate(obj.spec.ports):
            if isinstance(port.target, str) and selected \
                    and all(d.port_number(port.target) is None for d in selected):
                names = ", ".join(d.name for d in selected)
                doc.fail(("spec", "ports", i, "targetPort"),
                         f"no container port named {port.target!r} in Deployment {names}")


def read_sources(target: str, stdin: TextIO | None = None) -> list[tuple[str, str]]:
    """(source name, text) for ``FILE``, each manifest file of ``DIR``, or ``-``.

    Raises ConfigError for what cannot be read, or a directory without manifests."""
    if target == "-":
        return [("<stdin>", (stdin or sys.stdin).read(MAX_BYTES + 1))]
    path = Path(target)
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir()
                           if p.suffix in EXTENSIONS and p.is_file())
            if not files:
                raise ConfigError(f"{target}: no {', '.join(EXTENSIONS)} files", "file")
        else:
            files = [path]
        return [(str(p), _read(p)) for p in files]
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename or target}: {exc.strerror}",
                          "file") from None


def _read(path: Path) -> str:
    with path.open(encoding="utf-8", errors="surrogateescape") as f:
        return f.read(MAX_BYTES + 1)


def load(target: str, stdin: TextIO | None = None) -> list[KubeObject]:
    """``parse_documents`` over everything ``read_sources(target)`` reads."""
    objects: list[KubeObject] = []
    for source, text in read_sources(target, stdin):
        objects.extend(parse_documents(text, source))
    return objects
