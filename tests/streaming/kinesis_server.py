"""Kinesalite (npm ``kinesalite``, an in-memory Kinesis server in Node.js) on 127.0.0.1,
for tests/streaming/test_kinesis.py.

Kinesalite models resharding as Kinesis does: a split or merged shard is closed with an
``EndingSequenceNumber`` and keeps its records, its children name it as
``ParentShardId``/``AdjacentParentShardId`` and start empty, and ``GetRecords`` at a
closed shard's end answers no ``NextShardIterator``. moto's server mode (5.x) does not:
its split moves the parent's records into the children with new sequence numbers, new
records still land in the closed parent, and its iterators never end. (Kinesalite's
one bug that matters here, an AT_TIMESTAMP iterator past the last record, is mended
when it starts: see ``_START``.)

``make test`` installs it into ``tests/streaming/.kinesalite`` (``npm install``); run
``python -m tests.streaming.kinesis_server`` to do the same.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.streaming.cloud_servers import AWS_ENV, _Server

__all__ = ["Kinesalite", "install"]

VERSION = "3.3.3"
HOME = Path(__file__).parent / ".kinesalite"
_MODULE = HOME / "node_modules" / "kinesalite"
# Listen on loopback only (kinesalite's own command line binds every interface). And
# mend one kinesalite bug first: GetShardIterator AT_TIMESTAMP never answers when no
# record arrived at or after the timestamp (Kinesis answers an iterator at the shard's
# end): its action module is loaded, patched to answer that, from the cache.
_START = r"""
const [port, home] = [Number(process.argv[1]), process.argv[2]];
const fs = require('fs'), path = require('path'), Module = require('module');
const file = path.join(home, 'actions', 'getShardIterator.js');
const before = ".head(function(item) {\n          iteratorSeq = item.key.split('/')[1]";
const after = ".join(function(items) {\n          iteratorSeq = items.length ? " +
  "items[0].key.split('/')[1] : db.stringifySequence({shardCreateTime: " +
  "shardSeqObj.shardCreateTime, seqIx: stream._seqIx[Math.floor(shardIx / 5)], " +
  "seqTime: now, shardIx: shardSeqObj.shardIx})";
const source = fs.readFileSync(file, 'utf8');
if (!source.includes(before)) throw new Error('kinesalite changed: ' + file);
const patched = new Module(file, module);
patched.filename = file;
patched.paths = Module._nodeModulePaths(path.dirname(file));
patched._compile(source.replace(before, after), file);
patched.loaded = true;
require.cache[file] = patched;
require(home)({createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100})
  .listen(port, '127.0.0.1');
"""


def install() -> Path:
    """Install kinesalite with npm (a no-op once installed)."""
    if not (_MODULE / "package.json").exists():
        HOME.mkdir(exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(HOME),
             f"kinesalite@{VERSION}"],
            check=True,
        )  # fmt: skip
    return _MODULE


class Kinesalite(_Server):
    """A Kinesis-protocol server on a free port of 127.0.0.1; streams are created and
    resharded at once (no CREATING/UPDATING delay)."""

    def command(self) -> list[str]:
        node = shutil.which("node")
        if node is None or not (_MODULE / "package.json").exists():
            raise RuntimeError(
                "kinesalite is not installed: run `python -m tests.streaming.kinesis_server` "
                "(Node.js and npm needed)"
            )
        return [node, "-e", _START, str(self.port), str(_MODULE)]

    def env(self) -> dict[str, str]:
        """What a boto3 client (or a child process) needs to talk to this server."""
        return {**AWS_ENV, "AWS_ENDPOINT_URL_KINESIS": self.endpoint}

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "kinesis",
            endpoint_url=self.endpoint,
            region_name=AWS_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )


if __name__ == "__main__":
    print(install())
    sys.exit(0)
