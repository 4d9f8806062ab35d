"""Input validation driven by the botocore shapes: what botocore checks client-side and what it does not.

botocore only checks `required`, `min` and unions before sending; `max`, `pattern`, enums, ranges and
types arrive unchecked, and a non-boto3 client checks nothing. `Validator.convert` walks the input
shape, turns wire values into what boto3 callers pass (bytes for base64 blobs, datetime for
timestamps), drops members the model does not know, and collects every constraint violation with
its field path (`retrievalConfiguration.vectorSearchConfiguration.numberOfResults`).

Every string from the wire (members, map keys, and the strings and keys inside free-form documents
such as filters) is checked here, once, for what no layer below can take: NUL characters and lone
surrogates (`pgkb.errors.unstorable`). Messages echo values through `printable`, so an error body
can always be encoded.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import re
from functools import lru_cache
from typing import Any

from pgkb.errors import printable, unstorable
from pgkb.server.model import ServiceModel

# Java/Smithy regexes use \p{C} (Unicode "other": controls, format, unassigned); Python's re lacks it.
_CONTROL = r"\x00-\x1f\x7f-\x9f"
_MAX_ERRORS = 10


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str] | None:
    translated = (
        pattern.replace(r"[^\p{C}]", f"[^{_CONTROL}]")
        .replace(r"\P{C}", f"[^{_CONTROL}]")
        .replace(r"\p{C}", f"[{_CONTROL}]")
        # bedrock-agent's TaggableResourcesArn writes the account as ":/d{12}:" (a slash for a
        # backslash): as written no ARN matches it, and Bedrock itself accepts real ARNs there.
        .replace(":/d{12}:", r":\d{12}:")
    )
    try:
        return re.compile(translated, re.DOTALL)
    except re.error:
        return None  # a construct Python cannot express: skip rather than reject valid input


class FieldError:
    __slots__ = ("path", "message")

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message


def _show(value: Any, sensitive: bool) -> str:
    if sensitive:
        return "Value"
    text = value if isinstance(value, str) else repr(value) if not isinstance(value, int) else _int_text(value)
    if isinstance(value, bool):
        text = "true" if value else "false"
    if len(text) > 64:
        text = text[:61] + "..."
    return f"Value '{printable(text)}'"


def _int_text(value: int) -> str:
    """repr() of a huge int raises past 4,300 digits; the message needs only its start."""
    try:
        return repr(value)
    except ValueError:
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"


def _join(path: str, member: str) -> str:
    return f"{path}.{member}" if path else member


class Validator:
    """Converts and validates one operation input against a service model."""

    def __init__(self, model: ServiceModel) -> None:
        self.model = model

    def convert(self, shape_name: str, value: Any, path: str = "") -> tuple[Any, list[FieldError]]:
        errors: list[FieldError] = []
        out = self._walk(shape_name, value, path, errors, sensitive=False)
        return out, errors

    # -- the walk ---------------------------------------------------------------------------
    def _walk(self, shape_name: str, value: Any, path: str, errors: list[FieldError], sensitive: bool) -> Any:
        shape = self.model.shape(shape_name)
        sensitive = sensitive or bool(shape.get("sensitive"))
        kind = shape["type"]
        handler = getattr(self, f"_t_{kind}", None)
        if handler is None:
            return value
        return handler(shape, value, path, errors, sensitive)

    def _type_error(
        self, errors: list[FieldError], path: str, value: Any, kind: str, sensitive: bool
    ) -> None:
        errors.append(
            FieldError(
                path,
                f"{_show(value, sensitive)} at '{path}' failed to satisfy constraint: Member must be of type {kind}",
            )
        )

    def _t_structure(
        self, shape: dict, value: Any, path: str, errors: list[FieldError], sensitive: bool
    ) -> Any:
        if shape.get("document"):
            self._document(value, path, errors, sensitive)
            return value
        if not isinstance(value, dict):
            self._type_error(errors, path or "body", value, "structure", sensitive)
            return None
        members: dict[str, dict] = shape.get("members", {})
        out: dict[str, Any] = {}
        for name, v in value.items():
            spec = members.get(name)
            if spec is None or v is None:
                continue  # unknown members are ignored, as AWS does for forward compatibility
            out[name] = self._walk(spec["shape"], v, _join(path, name), errors, sensitive)
        for name in shape.get("required", ()):
            if out.get(name) is None and value.get(name) is None:
                p = _join(path, name)
                errors.append(
                    FieldError(
                        p, f"Value null at '{p}' failed to satisfy constraint: Member must not be null"
                    )
                )
        if shape.get("union"):
            set_members = [k for k, v in out.items() if v is not None]
            if len(set_members) != 1:
                p = path or "body"
                errors.append(
                    FieldError(
                        p,
                        f"Value at '{p}' failed to satisfy constraint: Member must have exactly one of "
                        f"[{', '.join(members)}] set, found {len(set_members)}",
                    )
                )
        return out

    def _document(self, value: Any, path: str, errors: list[FieldError], sensitive: bool) -> None:
        """Free-form JSON (e.g. a filter value): no shape to walk, but its strings reach the
        database all the same. Iterative, as the body's depth is bounded but its breadth is not."""
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                self._text(item, path, errors, sensitive)
            elif isinstance(item, dict):
                for k, v in item.items():
                    self._text(k, path, errors, sensitive)
                    stack.append(v)
            elif isinstance(item, list):
                stack.extend(item)

    def _text(self, value: str, path: str, errors: list[FieldError], sensitive: bool) -> bool:
        why = unstorable(value)
        if why is None:
            return True
        errors.append(
            FieldError(path, f"{_show(value, sensitive)} at '{path}' failed to satisfy constraint: Member {why}")
        )
        return False

    def _t_list(self, shape: dict, value: Any, path: str, errors: list[FieldError], sensitive: bool) -> Any:
        if not isinstance(value, list):
            self._type_error(errors, path, value, "list", sensitive)
            return None
        self._size(shape, len(value), path, errors, "have length", value, sensitive)
        member = shape["member"]["shape"]
        return [self._walk(member, v, f"{path}[{i}]", errors, sensitive) for i, v in enumerate(value)]

    def _t_map(self, shape: dict, value: Any, path: str, errors: list[FieldError], sensitive: bool) -> Any:
        if not isinstance(value, dict):
            self._type_error(errors, path, value, "map", sensitive)
            return None
        self._size(shape, len(value), path, errors, "have length", value, sensitive)
        kshape, vshape = shape["key"]["shape"], shape["value"]["shape"]
        out = {}
        for k, v in value.items():
            kpath = f"{path}.{printable(k)}"
            key = self._walk(kshape, k, kpath, errors, sensitive)
            out[key] = self._walk(vshape, v, kpath, errors, sensitive)
        return out

    def _t_string(self, shape: dict, value: Any, path: str, errors: list[FieldError], sensitive: bool) -> Any:
        if not isinstance(value, str):
            self._type_error(errors, path, value, "string", sensitive)
            return None
        if not self._text(value, path, errors, sensitive):
            return None
        self._size(shape, len(value), path, errors, "have length", value, sensitive)
        enum = shape.get("enum")
        if enum and value not in enum:
            errors.append(
                FieldError(
                    path,
                    f"{_show(value, sensitive)} at '{path}' failed to satisfy constraint: "
                    f"Member must satisfy enum value set: [{', '.join(enum)}]",
                )
            )
        pattern = shape.get("pattern")
        if pattern:
            rx = compile_pattern(pattern)
            if rx is not None and rx.search(value) is None:
                errors.append(
                    FieldError(
                        path,
                        f"{_show(value, sensitive)} at '{path}' failed to satisfy constraint: "
                        f"Member must satisfy regular expression pattern: {pattern}",
                    )
                )
        return value

    def _number(
        self, shape: dict, value: Any, path: str, errors: list[FieldError], sensitive: bool, kind: str
    ) -> Any:
        integral = kind in ("integer", "long", "short", "byte")
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not integral:
            ok = ok or (isinstance(value, float) and math.isfinite(value))
        if not ok:
            self._type_error(errors, path, value, kind, sensitive)
            return None
        if "min" in shape and value < shape["min"]:
            errors.append(
                FieldError(
                    path,
                    f"{_show(value, sensitive)} at '{path}' failed to satisfy constraint: "
                    f"Member must have value greater than or equal to {shape['min']}",
                )
            )
        if "max" in shape and value > shape["max"]:
            errors.append(
                FieldError(
                    path,
                    f"{_show(value, sensitive)} at '{path}' failed to satisfy constraint: "
                    f"Member must have value less than or equal to {shape['max']}",
                )
            )
        bits = {"integer": 31, "long": 63}.get(kind)
        if bits is not None and not (-(2**bits) <= value < 2**bits):
            self._type_error(errors, path, value, kind, sensitive)
            return None
        if not integral:
            try:
                return float(value)
            except OverflowError:  # an int beyond any double
                self._type_error(errors, path, value, kind, sensitive)
                return None
        return value

    def _t_integer(
        self, shape: dict, value: Any, path: str, errors: list[FieldError], sensitive: bool
    ) -> Any:
        return self._number(shape, value, path, errors, sensitive, "integer")

    def _t_long(self, shape: dict, value: Any, path: str, errors: list[FieldError], sensitive: bool) -> Any:
        return self._number(shape, value, path, errors, sensitive, "long")

    def _t_float(self, shape: dict, value: Any, path: str, errors: list[FieldError], sensitive: bool) -> Any:
        return self._number(shape, value, path, errors, sensitive, "float")

    def _t_double(self, shape: dict, value: Any, path: str, errors: list[FieldError], sensitive: bool) -> Any:
        return self._number(shape, value, path, errors, sensitive, "double")

    def _t_boolean(
        self, shape: dict, value: Any, path: str, errors: list[FieldError], sensitive: bool
    ) -> Any:
        if not isinstance(value, bool):
            self._type_error(errors, path, value, "boolean", sensitive)
            return None
        return value

    def _t_blob(self, shape: dict, value: Any, path: str, errors: list[FieldError], sensitive: bool) -> Any:
        if isinstance(value, bytes | bytearray):
            data = bytes(value)  # a raw payload
        elif isinstance(value, str):
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                errors.append(
                    FieldError(
                        path, f"Value at '{path}' failed to satisfy constraint: Member must be base64-encoded"
                    )
                )
                return None
        else:
            self._type_error(errors, path, value, "blob", sensitive)
            return None
        self._size(shape, len(data), path, errors, "have length", data, True)
        return data

    def _t_timestamp(
        self, shape: dict, value: Any, path: str, errors: list[FieldError], sensitive: bool
    ) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return dt.datetime.fromtimestamp(value, tz=dt.UTC)
            except (OverflowError, OSError, ValueError):
                pass
        elif isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
            except ValueError:
                pass
        self._type_error(errors, path, value, "timestamp", sensitive)
        return None

    def _size(
        self,
        shape: dict,
        size: int,
        path: str,
        errors: list[FieldError],
        what: str,
        value: Any,
        sensitive: bool,
    ) -> None:
        if "min" in shape and size < shape["min"]:
            errors.append(
                FieldError(
                    path,
                    f"{_show(value, sensitive)} at '{path}' failed to satisfy constraint: "
                    f"Member must {what} greater than or equal to {shape['min']}",
                )
            )
        if "max" in shape and size > shape["max"]:
            errors.append(
                FieldError(
                    path,
                    f"{_show(value, sensitive)} at '{path}' failed to satisfy constraint: "
                    f"Member must {what} less than or equal to {shape['max']}",
                )
            )


def summarize(errors: list[FieldError]) -> str:
    """AWS's wording: `2 validation errors detected: ...; ...`."""
    n = len(errors)
    shown = "; ".join(e.message for e in errors[:_MAX_ERRORS])
    return f"{n} validation error{'s' if n != 1 else ''} detected: {shown}"
