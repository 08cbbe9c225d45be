"""Local stand-ins for AWS and Google Cloud Storage, for the tests, each its own process
bound to 127.0.0.1 on a free port:

- :class:`MotoServer`: moto's server mode (PyPI ``moto[server]``), one HTTP endpoint
  for every AWS service it models (S3, Kinesis ...); clients reach it by
  ``endpoint_url`` (``AWS_ENDPOINT_URL``, Beam's ``--s3_endpoint_url``).
- :class:`GcsEmulator`: PyPI ``gcp-storage-emulator`` (the JSON API, uploads included),
  which ``google-cloud-storage`` reaches through ``STORAGE_EMULATOR_HOST``.

Each is a context manager: started and waited for on entry, stopped on exit (its own
process only, by its pid).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = ["GcsEmulator", "MotoServer", "free_port"]

#: Credentials the local servers accept (they check none).
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A server process, waited for until ``ready_path`` answers over HTTP."""

    ready_path = "/"

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.endpoint + self.ready_path, timeout=2).close()
                return self
            except urllib.error.HTTPError:
                return self  # it answers
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"{self.command()[:3]} did not start") from None
                time.sleep(0.1)

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class MotoServer(_Server):
    ready_path = "/moto-api/"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def env(self) -> dict[str, str]:
        """What a boto3 client (or a child process) needs to talk to this server."""
        return {**AWS_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self, service: str) -> Any:
        import boto3

        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint,
            region_name=AWS_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def beam_args(self) -> list[str]:
        """Beam's S3 options for this server."""
        return [
            f"--s3_endpoint_url={self.endpoint}",
            f"--s3_access_key_id={AWS_ENV['AWS_ACCESS_KEY_ID']}",
            f"--s3_secret_access_key={AWS_ENV['AWS_SECRET_ACCESS_KEY']}",
            f"--s3_region_name={AWS_ENV['AWS_DEFAULT_REGION']}",
        ]


class GcsEmulator(_Server):
    ready_path = "/storage/v1/b"

    def __init__(self, bucket: str) -> None:
        super().__init__()
        self.bucket = bucket

    def command(self) -> list[str]:
        program = os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
        return [
            program,
            "start",
            "--host=127.0.0.1",
            f"--port={self.port}",
            "--in-memory",
            f"--default-bucket={self.bucket}",
        ]

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.endpoint}
