"""A moto server (S3, Secrets Manager, ...) in this process on a free 127.0.0.1 port, and S3 buckets
filled with documents and their `.metadata.json` sidecars."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from helpers.servers import free_port


@contextmanager
def moto_server() -> Iterator[str]:
    """Yields the endpoint URL; stops the server afterwards."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_client(url: str, region: str = "us-east-1") -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=url, region_name=region, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def fill_bucket(url: str, bucket: str, docs: Mapping[str, tuple[str, dict[str, Any]]], region: str = "us-east-1") -> None:
    """Create `bucket` with each key's text and, beside it, its metadata attributes as a sidecar."""
    s3 = s3_client(url, region)
    s3.create_bucket(Bucket=bucket)
    for key, (text, attrs) in docs.items():
        s3.put_object(Bucket=bucket, Key=key, Body=text.encode())
        s3.put_object(Bucket=bucket, Key=key + ".metadata.json",
                      Body=json.dumps({"metadataAttributes": attrs}).encode())
