"""An S3-compatible server on localhost for tests and ``bench/``: moto's server mode, in a thread.

``s3_server()`` starts it on a free port and yields its endpoint URL; ``s3_env(endpoint)`` is
the standard AWS environment that points spendpred (pyarrow) and boto3 at it;
``create_bucket`` makes a bucket. No cloud service is contacted: the credentials are fake.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

REGION = "us-east-1"


@contextmanager
def s3_server() -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1 (a free port); yield ``http://127.0.0.1:<port>``; stop it after."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_env(endpoint: str) -> dict[str, str]:
    """The AWS variables that point pyarrow and boto3 at ``endpoint`` with fake credentials."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
    }


def client(endpoint: str):  # noqa: ANN201 - a boto3 client
    """A boto3 S3 client on ``endpoint`` (for tests that inspect or damage objects directly)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip


def create_bucket(endpoint: str, name: str) -> None:
    """Create the bucket ``name`` on the server."""
    client(endpoint).create_bucket(Bucket=name)


def keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """Every object key in ``bucket`` under ``prefix``, sorted (pyarrow's empty ``folder/`` markers left out)."""
    pages = client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []) if not item["Key"].endswith("/"))
