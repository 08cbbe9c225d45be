"""Google Cloud Pub/Sub: ``ReadPubSub`` (streaming pipelines), ``PubSubPuller``
(micro-batch drivers) and ``publish`` (model announcements).

Each message's data is one row, as for Kafka (:mod:`beam_ml.io.records`): one CSV line
without header, one JSON array or object, or one LIBSVM line. An undecodable message
is a bad record with ``file`` = ``'pubsub://projects/P/subscriptions/S'`` and
``offset`` = its message id (a string).

``ReadPubSub`` is Beam's ``ReadFromPubSub`` followed by :class:`DecodeRecords`, so it
needs a streaming pipeline (``--streaming``); messages are acknowledged by the runner.
``PubSubPuller`` is a synchronous pull/ack client for drivers that acknowledge only
after a checkpoint. The Google client is imported when first used, so ``beam_ml``
does not need it unless Pub/Sub is read. Setting ``PUBSUB_EMULATOR_HOST=host:port``
points every client (and Beam's DirectRunner) at an emulator.

Examples
--------
>>> parse_pubsub_url("pubsub://projects/p/subscriptions/events")
'projects/p/subscriptions/events'
>>> read = ReadPubSub("projects/p/subscriptions/events", "csv", feature_dim=8)
>>> read.n_features
8
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from beam_ml.core.errors import BadInputError
from beam_ml.io.feeds import FromRecords, RecordsFeed, Take
from beam_ml.io.readers import RecordReader
from beam_ml.io.records import DecodeRecords, RecordSpec
from beam_ml.io.scratch import temp_dir

__all__ = [
    "PubSubFeed",
    "PubSubPuller",
    "PulledMessage",
    "ReadPubSub",
    "parse_pubsub_url",
    "publish",
]

_ACK_CHUNK = 1000  # ack ids per request: the service caps the request size
_MAX_ACK_DEADLINE = 600
_PUBLISH_TIMEOUT = 60.0


def _pubsub() -> Any:
    """``google.cloud.pubsub_v1``, imported on first use."""
    try:
        from google.cloud import pubsub_v1
    except ImportError as exc:
        raise ImportError(
            "reading or publishing Pub/Sub needs the google-cloud-pubsub package "
            f"(pip install google-cloud-pubsub): {exc}"
        ) from None
    return pubsub_v1


def _api_exceptions() -> Any:
    from google.api_core import exceptions

    return exceptions


def parse_pubsub_url(url: str, expect: str | None = None) -> str:
    """``pubsub://projects/P/subscriptions/S`` (or ``.../topics/T``) -> resource path.

    Parameters
    ----------
    url : str
    expect : {'subscription', 'topic'}, optional
        Refuse the other kind.

    Raises
    ------
    BadInputError
        Not a ``pubsub://`` URL of a subscription or topic (of the expected kind).

    >>> parse_pubsub_url("pubsub://projects/p/topics/models", expect="topic")
    'projects/p/topics/models'
    """
    if expect not in (None, "subscription", "topic"):
        raise BadInputError(
            f"The 'expect' parameter of parse_pubsub_url must be 'subscription', 'topic' "
            f"or None. Got {expect!r} instead."
        )
    wanted = {
        None: "pubsub://projects/P/subscriptions/S or pubsub://projects/P/topics/T",
        "subscription": "pubsub://projects/P/subscriptions/S",
        "topic": "pubsub://projects/P/topics/T",
    }[expect]
    prefix = "pubsub://"
    parts = url[len(prefix) :].strip("/").split("/") if url.startswith(prefix) else []
    if (
        len(parts) != 4
        or parts[0] != "projects"
        or parts[2] not in ("subscriptions", "topics")
        or not parts[1]
        or not parts[3]
        or any(c in url for c in "?# ")
    ):
        raise BadInputError(f"a Pub/Sub {expect or 'resource'} is {wanted}; got {url!r}.")
    kind = parts[2][:-1]
    if expect is not None and kind != expect:
        raise BadInputError(f"expected a Pub/Sub {expect} ({wanted}), but {url!r} is a {kind}.")
    return "/".join(parts)


def _path(name: str, expect: str) -> str:
    """A ``pubsub://`` URL or a ``projects/P/<kind>s/N`` path -> the path."""
    if isinstance(name, str) and name.startswith("projects/"):
        name = "pubsub://" + name
    if not isinstance(name, str):
        raise BadInputError(f"a Pub/Sub {expect} is a str path; got {name!r}.")
    return parse_pubsub_url(name, expect=expect)


# ---------------------------------------------------------------------- pulling


@dataclass(frozen=True)
class PulledMessage:
    """One message pulled, leased until acknowledged, nacked or its deadline passes.

    Attributes
    ----------
    message_id : str
    ack_id : str
        What :meth:`PubSubPuller.ack` (``nack``, ``extend``) takes; valid for one delivery.
    data : bytes
    publish_time : float
        Seconds since the epoch.
    attributes : dict of str -> str
    """

    message_id: str
    ack_id: str
    data: bytes
    publish_time: float
    attributes: dict[str, str] = field(default_factory=dict)


class PubSubPuller:
    """A synchronous pull/ack client over one subscription, for a micro-batch driver.

    Parameters
    ----------
    subscription : str
        ``projects/P/subscriptions/S`` or ``pubsub://projects/P/subscriptions/S``.

    Examples
    --------
    >>> puller = PubSubPuller("projects/p/subscriptions/events")  # doctest: +SKIP
    >>> batch = puller.pull(1000, timeout=2.0)                     # doctest: +SKIP
    >>> puller.ack([m.ack_id for m in batch])                      # doctest: +SKIP
    """

    def __init__(self, subscription: str):
        self.subscription = _path(subscription, "subscription")
        self._client = _pubsub().SubscriberClient()

    def pull(self, max_messages: int, timeout: float = 10.0) -> list[PulledMessage]:
        """Up to ``max_messages`` messages, or what arrived within ``timeout`` seconds
        (an empty list when none did).

        Raises
        ------
        BadInputError
            The subscription does not exist.
        """
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1:
            raise BadInputError(
                "The 'max_messages' parameter of PubSubPuller.pull must be an int >= 1. "
                f"Got {max_messages!r} instead."
            )
        errors = _api_exceptions()
        try:
            # retry=None: an empty subscription answers DeadlineExceeded, which the
            # default policy would retry until its own, longer deadline.
            response = self._client.pull(
                request={"subscription": self.subscription, "max_messages": max_messages},
                timeout=timeout,
                retry=None,
            )
        except errors.DeadlineExceeded:
            return []
        except errors.NotFound:
            raise BadInputError(
                f"the Pub/Sub subscription {self.subscription} does not exist."
            ) from None
        return [
            PulledMessage(
                message_id=r.message.message_id,
                ack_id=r.ack_id,
                data=bytes(r.message.data),
                publish_time=r.message.publish_time.timestamp(),
                attributes=dict(r.message.attributes),
            )
            for r in response.received_messages
        ]

    def _chunks(self, ack_ids: Sequence[str]) -> Iterator[list[str]]:
        ack_ids = list(ack_ids)
        for i in range(0, len(ack_ids), _ACK_CHUNK):
            yield ack_ids[i : i + _ACK_CHUNK]

    def ack(self, ack_ids: Sequence[str]) -> None:
        """Acknowledge: the messages are not delivered again."""
        for chunk in self._chunks(ack_ids):
            self._client.acknowledge(request={"subscription": self.subscription, "ack_ids": chunk})

    def extend(self, ack_ids: Sequence[str], seconds: int) -> None:
        """Set the messages' ack deadline to ``seconds`` from now (0 = nack)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise BadInputError(
                f"The 'seconds' parameter of PubSubPuller.extend must be an int in "
                f"[0, {_MAX_ACK_DEADLINE}]. Got {seconds!r} instead."
            )
        if not 0 <= seconds <= _MAX_ACK_DEADLINE:
            raise BadInputError(
                f"The 'seconds' parameter of PubSubPuller.extend must be an int in "
                f"[0, {_MAX_ACK_DEADLINE}]. Got {seconds!r} instead."
            )
        for chunk in self._chunks(ack_ids):
            self._client.modify_ack_deadline(
                request={
                    "subscription": self.subscription,
                    "ack_ids": chunk,
                    "ack_deadline_seconds": seconds,
                }
            )

    def nack(self, ack_ids: Sequence[str]) -> None:
        """Give the messages back: they are redelivered at once."""
        self.extend(ack_ids, 0)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PubSubPuller:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def publish(topic_path: str, data: bytes, **attributes: str) -> str:
    """Publish one message and wait until the service has it; returns its message id.

    ``topic_path`` is ``projects/P/topics/T`` or ``pubsub://projects/P/topics/T``.
    """
    topic = _path(topic_path, "topic")
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, (bytes, bytearray)):
        raise BadInputError(f"Pub/Sub message data must be bytes; got {type(data).__name__}.")
    client = _pubsub().PublisherClient()
    try:
        return client.publish(topic, bytes(data), **attributes).result(timeout=_PUBLISH_TIMEOUT)
    finally:
        client.stop()


def _peek(subscription: str, timeout: float) -> bytes:
    """The data of a message of ``subscription``, which is given back (nacked) at once."""
    puller = PubSubPuller(subscription)
    try:
        deadline = time.monotonic() + timeout
        while True:
            messages = puller.pull(10, timeout=max(0.1, min(10.0, deadline - time.monotonic())))
            if messages:
                puller.nack([m.ack_id for m in messages])  # redelivered, to be trained on
            first = next((m.data for m in messages if m.data.strip()), None)
            if first is not None:
                return first
            if time.monotonic() >= deadline:
                raise BadInputError(
                    f"no message with data arrived on {subscription} within {timeout:.0f} s, "
                    "so its feature count is unknown: give feature_dim or first_value."
                )
            if messages:
                time.sleep(0.2)  # only blank messages, redelivered at once: do not spin
    finally:
        puller.close()


# ---------------------------------------------------------------------- reading


def _record(message: Any) -> tuple[str, bytes]:
    return message.message_id, message.data


class ReadPubSub(RecordReader):
    """Read a Pub/Sub subscription into an unbounded PCollection of blocks.

    Beam's ``ReadFromPubSub`` (the runner pulls and acknowledges) followed by
    :class:`~beam_ml.io.records.DecodeRecords`: the messages of a bundle become blocks of
    at most ``block_size`` rows, timestamped with their earliest publish time. Needs a
    streaming pipeline.

    Parameters
    ----------
    subscription : str
        ``projects/P/subscriptions/S`` or ``pubsub://projects/P/subscriptions/S``.
    format : {'csv', 'jsonl', 'libsvm'}
    label_column : int or str, optional
        CSV: field index; JSON: element index or key (``'label'`` when present).
    delimiter : str, default ','
    feature_dim : int, optional
        Features per row. Required for LIBSVM.
    zero_based : bool, default False
    features_key : str, default 'features'
    block_size : int, default 10_000
    strict : bool, default False
        Stop at the first bad record.
    first_value : bytes, optional
        A message of the stream, to count its features without peeking.
    peek_timeout : float, default 60
        How long to wait for a message to peek at.

    Attributes
    ----------
    n_features : int

    Raises
    ------
    BadInputError
        At construction: bad options, a first message that does not parse, no message
        to peek at within ``peek_timeout``, an unknown subscription.

    Notes
    -----
    The feature count comes from ``feature_dim``, else from ``first_value``, else by
    *peeking*: at construction the driver pulls a message with its own client and at
    once sets its ack deadline to 0 (a nack), so the service redelivers it and the
    pipeline trains on it like any other. The peek counts one delivery attempt of that
    message (it matters with a dead-letter policy of very few attempts). JSON objects
    take their ``'label'`` key by default only when a first message is seen.
    """

    def __init__(
        self,
        subscription: str,
        format: str,
        *,
        first_value: bytes | None = None,
        peek_timeout: float = 60.0,
        **decoding: Any,
    ):
        path = _path(subscription, "subscription")
        super().__init__(format, **decoding)  # the decoding options, checked before any network
        self.subscription = path
        if first_value is None and self._decoding.get("feature_dim") is None:
            first_value = _peek(self.subscription, peek_timeout)
        self._spec: RecordSpec = self._settle(first_value)

    @property
    def spec(self) -> RecordSpec:
        return self._spec

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        decode = DecodeRecords(self._spec, "pubsub://" + self.subscription)
        if self._with_dead_letters:
            decode = decode.with_dead_letters()
        return (
            pbegin
            | "ReadFromPubSub"
            >> beam.io.ReadFromPubSub(subscription=self.subscription, with_attributes=True)
            | "Records" >> beam.Map(_record)
            | "DecodeRecords" >> decode
        )


# --------------------------------------------------------------------------- PubSubFeed
# Continuous training's feed (beam_ml.transforms.continuous), beside the puller it uses.


class PubSubFeed(RecordsFeed):
    """A Pub/Sub subscription read in cycles; acknowledged after each checkpoint.

    Pulled messages are leased for ``lease_seconds`` (a crashed trainer's messages
    come back that long after it pulled them) and acknowledged once the checkpoint
    that includes them is written. Positions are ``{'recent': [[id, time], ...]}``:
    the ids checkpointed in the last two leases, so a message redelivered after a
    crash between a checkpoint and its ack is acknowledged and skipped, not counted
    twice.
    """

    def __init__(
        self,
        subscription: str,
        format: str,
        *,
        max_messages: int = 50_000,
        pull_seconds: float = 0.5,
        lease_seconds: float = 60.0,
        **decode_options: Any,
    ):
        self.name, self.format = subscription, format
        self._puller = PubSubPuller(subscription)
        self._max, self._pull_seconds, self._lease = max_messages, pull_seconds, lease_seconds
        self._options = decode_options
        self._spec: Any = None
        self._spill_dir = temp_dir("pubsub")

    def take(self, positions: dict[str, Any]) -> Take | None:
        from beam_ml.io.records import record_spec

        now = time.time()
        recent = [[i, t] for i, t in positions.get("recent", ()) if t >= now - 2 * self._lease]
        done = {i for i, _ in recent}
        messages, stale = [], []
        deadline = time.monotonic() + self._pull_seconds
        while len(messages) < self._max:
            wait = max(0.05, deadline - time.monotonic())
            got = self._puller.pull(min(1000, self._max - len(messages)), timeout=wait)
            if not got:
                break
            for m in got:
                (stale if m.message_id in done else messages).append(m)
            if time.monotonic() >= deadline:
                break
        if stale:  # checkpointed before a crash, but never acknowledged
            self._puller.ack([m.ack_id for m in stale])
        if not messages:
            return None
        self._puller.extend([m.ack_id for m in messages], int(round(self._lease)))
        if self._spec is None:
            first = next((m.data for m in messages if m.data.strip()), None)
            self._spec = record_spec(self.format, first, **self._options)
        group = (self.name, [m.message_id for m in messages], [m.data for m in messages])
        read = FromRecords([group], self._spec, self._spill_dir)
        return Take(
            read,
            {"recent": recent + [[m.message_id, now] for m in messages]},
            self._spec.n_features,
            [m.ack_id for m in messages],
        )

    def commit(self, take: Take) -> None:
        self._puller.ack(take.receipt)
        take.read.remove()

    def close(self) -> None:
        import shutil

        self._puller.close()
        shutil.rmtree(self._spill_dir, ignore_errors=True)
