"""Image references as Docker spells them: ``NAME[:TAG]``, or an image id.

A name is path components joined by ``/``; a component is lowercase letters and
digits, with single separators (``.``, ``_``, ``__`` or a run of ``-``) between them.
A tag is ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``, ``latest`` when left out. An image id
is ``sha256:`` and 64 hex digits; a lookup also takes a unique hex prefix of 12 or
more digits (bare, or after ``sha256:``). No registry exists here: a name with a
registry host and port (``localhost:5000/x``) or a digest (``x@sha256:…``) is refused.

Pure: no I/O. Every refusal is a ConfigError naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshlet.errors import ConfigError

DEFAULT_TAG = "latest"
MAX_NAME = 255
MIN_ID_PREFIX = 12
# \Z, not $: "$" also matches before a trailing newline, which would let "web\n" in.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
HEX = re.compile(r"[0-9a-f]+\Z")
FULL_ID = re.compile(r"sha256:[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Reference:
    """A repository name and a tag; ``str()`` is ``name:tag``."""

    name: str
    tag: str = DEFAULT_TAG

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"


@dataclass(frozen=True)
class Lookup:
    """What a user typed to find an image: a reference, an id prefix (lowercase hex,
    without ``sha256:``), or both when the text could be either (a short hex string,
    tried as a name first, as Docker does)."""

    reference: Reference | None
    id_prefix: str | None


def parse_reference(text: str, field: str = "name") -> Reference:
    """``NAME[:TAG]`` parsed (tag ``latest`` when absent). Raises ConfigError (``field``)
    for anything else, including a 64-digit hex name (it would read as an image id)."""
    if not isinstance(text, str) or not text:
        raise ConfigError("an image name is required (NAME[:TAG])", field)
    if "@" in text:
        raise ConfigError(f"image name {text!r}: digests (NAME@sha256:...) are not "
                          "supported; give NAME[:TAG]", field)
    name, tag = text, DEFAULT_TAG
    head, sep, tail = text.rpartition(":")
    if sep and "/" not in tail:
        name, tag = head, tail
        if not TAG.match(tag):
            raise ConfigError(
                f"image tag {tag!r} is not valid: a tag is up to 128 letters, digits, "
                "'_', '.' and '-', not starting with '.' or '-'", field)
    if len(name) > MAX_NAME:
        raise ConfigError(f"image name {name[:40]!r}...: longer than {MAX_NAME} characters",
                          field)
    if not NAME.match(name):
        raise ConfigError(
            f"image name {name!r} is not valid: lowercase letters and digits, separated "
            "by '.', '_', '__' or '-', in components joined by '/'", field)
    if len(name) == 64 and HEX.match(name):
        raise ConfigError(f"image name {name!r}: 64 hex digits is an image id, not a name",
                          field)
    return Reference(name, tag)


def parse_lookup(text: str, field: str = "image") -> Lookup:
    """A reference to an existing image: ``NAME[:TAG]``, ``sha256:<hex>`` or a bare hex
    prefix (at least 12 digits). Raises ConfigError (``field``) for none of these."""
    if not isinstance(text, str) or not text:
        raise ConfigError("an image name or id is required", field)
    if text.startswith("sha256:"):
        digits = text[len("sha256:"):]
        if not (HEX.match(digits) and MIN_ID_PREFIX <= len(digits) <= 64):
            raise ConfigError(f"image id {text!r} is not valid: sha256: and 12 to 64 "
                              "lowercase hex digits", field)
        return Lookup(None, digits)
    hexlike = bool(HEX.match(text)) and MIN_ID_PREFIX <= len(text) <= 64
    if hexlike and len(text) == 64:
        return Lookup(None, text)
    try:
        reference: Reference | None = parse_reference(text, field)
    except ConfigError:
        if hexlike:
            return Lookup(None, text)
        raise
    return Lookup(reference, text if hexlike else None)


def image_id(digest_hex: str) -> str:
    """The image id of a config whose sha256 is ``digest_hex``."""
    return f"sha256:{digest_hex}"


def short_id(image_id_text: str) -> str:
    """The 12 digits ``ls`` shows."""
    return image_id_text.removeprefix("sha256:")[:12]
