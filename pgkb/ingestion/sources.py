"""Where documents come from: a local folder, an S3 bucket (any S3-compatible endpoint), inline content.

A source lists `SourceDocument`s cheaply (uri, size, a content fingerprint, the sidecar's bytes) and
reads a document's bytes only when the sync decides it must be (re)indexed.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlparse

from pgkb import config
from pgkb.errors import DependencyFailedError, ValidationError
from pgkb.parsing import MAX_FILE_BYTES, MAX_SIDECAR_BYTES, SIDECAR_SUFFIX, is_sidecar


@dataclass
class SourceDocument:
    uri: str
    size: int
    fingerprint: str | None  # content hash (or ETag); None when the document is too large to read
    read: Callable[[], bytes]
    sidecar: bytes | None = None
    location: dict[str, Any] | None = None  # Bedrock's RetrievalResultLocation for this document

    @property
    def name(self) -> str:
        return unquote(urlparse(self.uri).path.rsplit("/", 1)[-1]) or self.uri

    @property
    def sidecar_hash(self) -> str | None:
        return hashlib.sha256(self.sidecar).hexdigest() if self.sidecar is not None else None


class Source(Protocol):
    def scan(self) -> Iterator[SourceDocument]: ...


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_uri(path: Path) -> str:
    return "file://" + quote(str(path.resolve()))


class LocalFolderSource:
    """Every file under a folder, recursively; `<file>.metadata.json` files are sidecars, not documents."""

    def __init__(self, path: str | Path) -> None:
        self.root = Path(path).expanduser().resolve()

    def scan(self) -> Iterator[SourceDocument]:
        if not self.root.is_dir():
            raise ValidationError(f"data source folder {self.root} does not exist or is not a folder")
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            names = set(filenames)
            for name in sorted(filenames):
                if is_sidecar(name) or name.startswith("."):
                    continue
                path = Path(dirpath) / name
                yield self._document(path, names)

    def get_uri(self, uri: str) -> bytes:
        """A document's bytes by its file:// URI (how a worker of another process reads it)."""
        p = urlparse(uri)
        path = Path(unquote(p.path))
        if p.scheme != "file" or not path.resolve().is_relative_to(self.root):
            raise ValidationError(f"{uri} is not in this data source's folder {self.root}")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ValidationError(f"cannot read file: {exc.strerror or exc}") from None

    def _document(self, path: Path, siblings: set[str]) -> SourceDocument:
        uri = file_uri(path)
        sidecar = None
        if path.name + SIDECAR_SUFFIX in siblings:
            side = path.with_name(path.name + SIDECAR_SUFFIX)
            try:
                sidecar = side.read_bytes()[: MAX_SIDECAR_BYTES + 1]
            except OSError:
                sidecar = b"\x00unreadable"
        location = {"type": "CUSTOM", "customDocumentLocation": {"id": uri}}
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        if size > MAX_FILE_BYTES:
            return SourceDocument(uri, size, None, lambda: b"", sidecar, location)
        try:
            data = path.read_bytes()
        except OSError as exc:
            reason = f"cannot read file: {exc.strerror or exc}"

            def fail() -> bytes:
                raise ValidationError(reason)

            return SourceDocument(uri, size, "unreadable:" + reason, fail, sidecar, location)
        digest = _sha256(data)
        return SourceDocument(uri, size, digest, lambda: path.read_bytes(), sidecar, location)


def parse_bucket_arn(bucket_arn: str) -> str:
    prefix = "arn:aws:s3:::"
    if not bucket_arn.startswith(prefix) or not bucket_arn[len(prefix):]:
        raise ValidationError(f"s3Configuration.bucketArn {bucket_arn!r} must look like arn:aws:s3:::bucket-name")
    return bucket_arn[len(prefix):]


def s3_client(endpoint_url: str | None = None) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url or config.current().s3_endpoint_url)


SIDECAR_WORKERS = 16


class S3Source:
    """Objects under one prefix of a bucket; ETag is the fingerprint, sidecars come from the same listing."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = s3_client(endpoint_url)

    def scan(self) -> Iterator[SourceDocument]:
        try:
            objects: dict[str, dict[str, Any]] = {}
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    objects[obj["Key"]] = obj
        except Exception as exc:  # botocore raises many types; all mean the same here
            raise DependencyFailedError(f"cannot list s3://{self.bucket}/{self.prefix}: {_aws_reason(exc)}") from None
        keys = [k for k in sorted(objects) if not (is_sidecar(k) or k.endswith("/"))]
        # Every sidecar is read at each sync (its hash tells a metadata-only change): concurrently,
        # since each is a round trip.
        wanted = [k + SIDECAR_SUFFIX for k in keys if k + SIDECAR_SUFFIX in objects]
        with ThreadPoolExecutor(SIDECAR_WORKERS, thread_name_prefix="pgkb-s3") as pool:
            sidecars = dict(zip(wanted, pool.map(lambda k: self._get(k)[: MAX_SIDECAR_BYTES + 1], wanted), strict=True))
        for key in keys:
            obj = objects[key]
            sidecar = sidecars.get(key + SIDECAR_SUFFIX)
            uri = f"s3://{self.bucket}/{key}"
            size = int(obj.get("Size", 0))
            etag = str(obj.get("ETag", "")).strip('"') or None
            yield SourceDocument(
                uri,
                size,
                None if size > MAX_FILE_BYTES else f"etag:{etag}",
                functools.partial(self._get, key),
                sidecar,
                {"type": "S3", "s3Location": {"uri": uri}},
            )

    def _get(self, key: str) -> bytes:
        try:
            data: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return data
        except Exception as exc:
            raise DependencyFailedError(f"cannot read s3://{self.bucket}/{key}: {_aws_reason(exc)}") from None

    def get_uri(self, uri: str) -> bytes:
        bucket, key = split_s3_uri(uri)
        if bucket != self.bucket:
            raise ValidationError(f"{uri} is not in this data source's bucket {self.bucket}")
        return self._get(key)


def split_s3_uri(uri: str) -> tuple[str, str]:
    p = urlparse(uri)
    if p.scheme != "s3" or not p.netloc or not p.path.strip("/"):
        raise ValidationError(f"{uri!r} is not an s3://bucket/key URI")
    return p.netloc, p.path.lstrip("/")


def _aws_reason(exc: Exception) -> str:
    err = getattr(exc, "response", {}).get("Error", {}) if hasattr(exc, "response") else {}
    if err:
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip()
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
