"""A loopback S3 server for tests: moto's standalone server on 127.0.0.1 and a free port.

The server runs in a thread of the test process, so moto's in-process switches (IAM
authentication) apply to it. Admin calls use their own explicit dummy keys and never
depend on the AWS_* variables a test sets for the code under test.

It is moto's `ThreadedMotoServer` rebuilt from moto's public WSGI application with one layer
around it: every request is counted by method and path (`requests`, `object_gets`), so a test sees
what reached the server, whatever client made it (boto3, pyarrow's S3 filesystem, DuckDB's httpfs).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

REGION = "eu-west-1"
ADMIN_KEYS = {"aws_access_key_id": "admin-key-id", "aws_secret_access_key": "admin-secret"}


class LoopbackS3:
    def __init__(self) -> None:
        # werkzeug prints one line per request; keep test output readable.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # (method, path, ranged) of every request the server answered: path is /bucket/key (path-style).
        self.requests: Counter[tuple[str, str, bool]] = Counter()
        self._requests_lock = threading.Lock()
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", 0, self._counting(app), True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.s3 = boto3.client("s3", endpoint_url=self.url, region_name=REGION, **ADMIN_KEYS)

    def _counting(self, app: Any) -> Any:
        def counted(environ: dict[str, Any], start_response: Any) -> Any:
            request = (environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), "HTTP_RANGE" in environ)
            with self._requests_lock:
                self.requests[request] += 1
            return app(environ, start_response)

        return counted

    def object_gets(self, bucket: str, prefix: str = "", *, ranged: bool) -> Counter[str]:
        """GET requests per object key under `prefix` in `bucket` so far: the ranged ones (a part of
        the object), or those of whole objects."""
        start = f"/{bucket}/{prefix}"
        gets: Counter[str] = Counter()
        with self._requests_lock:
            for (method, path, with_range), n in self.requests.items():
                if method == "GET" and with_range == ranged and path.startswith(start) and not path.endswith("/"):
                    gets[path[len(f"/{bucket}/") :]] += n
        return gets

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()

    def create_bucket(self, name: str) -> None:
        self.s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})

    def make_public(self, name: str) -> None:
        """Anyone may list and read the bucket, like the vendor's public sample bucket."""
        statement = {
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"],
        }
        self.s3.put_bucket_policy(Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]}))

    def upload_tree(self, bucket: str, prefix: str, root: Path) -> dict[str, bytes]:
        """Upload every file under `root` to `prefix/<relative path>`; returns key -> bytes."""
        uploaded = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(root).as_posix()}"
            body = path.read_bytes()
            self.s3.put_object(Bucket=bucket, Key=key, Body=body)
            uploaded[key] = body
        return uploaded

    def reader_keys(self, user: str, buckets: list[str], actions: tuple[str, ...] = ("s3:*",)) -> tuple[str, str]:
        """An IAM user allowed `actions` (default: everything) on `buckets` only; enforced inside
        `enable_iam_authentication()`."""
        iam = boto3.client("iam", endpoint_url=self.url, region_name="us-east-1", **ADMIN_KEYS)
        iam.create_user(UserName=user)
        resources = [arn for b in buckets for arn in (f"arn:aws:s3:::{b}", f"arn:aws:s3:::{b}/*")]
        allowed = {"Effect": "Allow", "Action": list(actions), "Resource": resources}
        policy = {"Version": "2012-10-17", "Statement": [allowed]}
        iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="module")
def s3() -> Iterator[LoopbackS3]:
    """A loopback S3 server shared by a test module's tests (each test makes buckets of its own)."""
    server = LoopbackS3()
    try:
        yield server
    finally:
        server.stop()
