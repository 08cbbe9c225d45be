"""A small in-process Google Pub/Sub server (gRPC, loopback only) for the tests.

It implements the parts of ``google.pubsub.v1.Publisher`` and ``Subscriber`` that
beam_ml and Beam's DirectRunner use, so the *real* ``google-cloud-pubsub`` client talks
to it through ``PUBSUB_EMULATOR_HOST`` (the client then opens an insecure channel):
topics and subscriptions (create, get, delete), ``Publish``, ``Pull``,
``StreamingPull`` (acks, deadline changes and ``stream_ack_deadline_seconds`` in the
requests; messages sent as they arrive), ``Acknowledge`` and ``ModifyAckDeadline``
(0 = nack: the message is redelivered at once). Every delivery leases the message for
its ack deadline; an unacknowledged message is redelivered when the lease expires, and
``delivery_attempt`` counts the deliveries (the real service sets it only with a
dead-letter policy).

google-cloud-pubsub ships no ``*_pb2_grpc`` servicers, so the methods are registered as
generic handlers with the protobuf classes behind its proto-plus types.

Deviations from the service, for fast tests: ack deadlines from 1 s are accepted (the
service wants 10 to 600 s for a subscription), and messages of a subscription are kept
in memory only while the server runs.
"""

from __future__ import annotations

import datetime
import itertools
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.pubsub_v1.types import pubsub

__all__ = ["PubSubServer"]

_pb = {
    name: getattr(pubsub, name).pb()
    for name in pubsub.__all__
    if isinstance(getattr(pubsub, name), type) and hasattr(getattr(pubsub, name), "pb")
}
_DEFAULT_ACK_DEADLINE = 10
_TICK = 0.05  # how often waiting pulls look for expired leases


@dataclass
class _Lease:
    message: Any  # PubsubMessage (protobuf)
    attempt: int
    deadline: float  # time.monotonic() at which it is redelivered


@dataclass
class _Subscription:
    name: str
    topic: str
    ack_deadline: int
    backlog: deque = field(default_factory=deque)  # (message, deliveries so far)
    leases: dict = field(default_factory=dict)  # ack_id -> _Lease

    def expire(self, now: float) -> None:
        """Put messages whose lease ran out back at the front of the backlog."""
        late = [ack_id for ack_id, lease in self.leases.items() if lease.deadline <= now]
        for ack_id in reversed(late):
            lease = self.leases.pop(ack_id)
            self.backlog.appendleft((lease.message, lease.attempt))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PubSubServer:
    """A Pub/Sub endpoint on ``127.0.0.1:PORT`` while the context is open.

    Parameters
    ----------
    project : str
        The project of :meth:`topic_path` and :meth:`subscription_path`.
    pull_wait : float
        How long an empty ``Pull`` waits for a message before it returns nothing.

    Examples
    --------
    >>> with PubSubServer() as server:  # doctest: +SKIP
    ...     os.environ["PUBSUB_EMULATOR_HOST"] = server.host
    ...     topic = server.create_topic("events")
    ...     sub = server.create_subscription("events-sub", "events", ack_deadline=2)
    """

    def __init__(self, project: str = "test-project", pull_wait: float = 0.5):
        self.project = project
        self.pull_wait = pull_wait
        self._lock = threading.Condition()
        self._topics: dict[str, Any] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._ids = itertools.count(1)
        self._ack_ids = itertools.count(1)
        self._stopping = False
        self._server: grpc.Server | None = None
        self.host = ""

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> PubSubServer:
        # 16 threads: each open StreamingPull holds one for its whole life.
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self._server.add_generic_rpc_handlers(self._handlers())
        for _ in range(5):  # another process may take the free port first
            port = _free_port()
            try:
                if self._server.add_insecure_port(f"127.0.0.1:{port}"):
                    break
            except RuntimeError:
                continue
        else:
            raise RuntimeError("PubSubServer could not bind a port on 127.0.0.1.")
        self.host = f"127.0.0.1:{port}"
        self._server.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._server is not None:
            self._server.stop(grace=1).wait()

    # ------------------------------------------------------------------ helpers

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        return f"projects/{self.project}/subscriptions/{subscription}"

    def create_topic(self, topic: str) -> str:
        """Create ``topic`` (a short name or a path); returns its path."""
        path = topic if topic.startswith("projects/") else self.topic_path(topic)
        with self._lock:
            self._topics.setdefault(path, _pb["Topic"](name=path))
        return path

    def create_subscription(self, subscription: str, topic: str, ack_deadline: int = 10) -> str:
        """Create a subscription to ``topic`` (created if needed); returns its path."""
        topic_path = self.create_topic(topic)
        path = (
            subscription
            if subscription.startswith("projects/")
            else self.subscription_path(subscription)
        )
        with self._lock:
            self._subscriptions.setdefault(path, _Subscription(path, topic_path, ack_deadline))
        return path

    def backlog(self, subscription: str) -> int:
        """Messages of ``subscription`` not yet acknowledged (leased or waiting)."""
        with self._lock:
            sub = self._subscriptions[subscription]
            return len(sub.backlog) + len(sub.leases)

    # ------------------------------------------------------------------ plumbing

    def _handlers(self) -> list[grpc.GenericRpcHandler]:
        def unary(fn: Any, request: str, response: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=_pb[request].FromString,
                response_serializer=response.SerializeToString,
            )

        empty = empty_pb2.Empty
        publisher = {
            "CreateTopic": unary(self.CreateTopic, "Topic", _pb["Topic"]),
            "GetTopic": unary(self.GetTopic, "GetTopicRequest", _pb["Topic"]),
            "DeleteTopic": unary(self.DeleteTopic, "DeleteTopicRequest", empty),
            "Publish": unary(self.Publish, "PublishRequest", _pb["PublishResponse"]),
        }
        subscriber = {
            "CreateSubscription": unary(
                self.CreateSubscription, "Subscription", _pb["Subscription"]
            ),
            "GetSubscription": unary(
                self.GetSubscription, "GetSubscriptionRequest", _pb["Subscription"]
            ),
            "DeleteSubscription": unary(
                self.DeleteSubscription, "DeleteSubscriptionRequest", empty
            ),
            "Pull": unary(self.Pull, "PullRequest", _pb["PullResponse"]),
            "Acknowledge": unary(self.Acknowledge, "AcknowledgeRequest", empty),
            "ModifyAckDeadline": unary(self.ModifyAckDeadline, "ModifyAckDeadlineRequest", empty),
            "StreamingPull": grpc.stream_stream_rpc_method_handler(
                self.StreamingPull,
                request_deserializer=_pb["StreamingPullRequest"].FromString,
                response_serializer=_pb["StreamingPullResponse"].SerializeToString,
            ),
        }
        return [
            grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", publisher),
            grpc.method_handlers_generic_handler("google.pubsub.v1.Subscriber", subscriber),
        ]

    def _subscription(self, name: str, context: grpc.ServicerContext) -> _Subscription:
        sub = self._subscriptions.get(name)
        if sub is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Subscription does not exist ({name})")
        return sub

    def _take(self, sub: _Subscription, max_messages: int, deadline: int) -> list[Any]:
        """Lease up to ``max_messages`` waiting messages for ``deadline`` s (lock held)."""
        out = []
        now = time.monotonic()
        while sub.backlog and len(out) < max_messages:
            message, attempts = sub.backlog.popleft()
            ack_id = f"{sub.name.rsplit('/', 1)[-1]}-{next(self._ack_ids)}"
            sub.leases[ack_id] = _Lease(message, attempts + 1, now + deadline)
            out.append(
                _pb["ReceivedMessage"](
                    ack_id=ack_id, message=message, delivery_attempt=attempts + 1
                )
            )
        return out

    def _modify(self, sub: _Subscription, ack_ids: Any, seconds: int) -> None:
        """Extend leases (lock held); 0 s gives the messages back for redelivery now."""
        now = time.monotonic()
        nacked = []
        for ack_id in ack_ids:
            lease = sub.leases.get(ack_id)
            if lease is None:  # acked, expired or unknown: ignored, as by the service
                continue
            if seconds <= 0:
                del sub.leases[ack_id]
                nacked.append((lease.message, lease.attempt))
            else:
                lease.deadline = now + seconds
        sub.backlog.extendleft(reversed(nacked))  # first, in the order given
        self._lock.notify_all()

    # ----------------------------------------------------------------- Publisher

    def CreateTopic(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            if request.name in self._topics:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, "Topic already exists")
            self._topics[request.name] = _pb["Topic"](name=request.name)
            return self._topics[request.name]

    def GetTopic(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            if request.topic not in self._topics:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Topic not found ({request.topic})")
            return self._topics[request.topic]

    def DeleteTopic(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            if self._topics.pop(request.topic, None) is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Topic not found ({request.topic})")
            return empty_pb2.Empty()

    def Publish(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            if request.topic not in self._topics:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Topic not found ({request.topic})")
            now = datetime.datetime.now(datetime.timezone.utc)
            ids = []
            for message in request.messages:
                stored = _pb["PubsubMessage"]()
                stored.CopyFrom(message)
                stored.message_id = str(next(self._ids))
                stored.publish_time.FromDatetime(now)
                ids.append(stored.message_id)
                for sub in self._subscriptions.values():
                    if sub.topic == request.topic:
                        sub.backlog.append((stored, 0))
            self._lock.notify_all()
        return _pb["PublishResponse"](message_ids=ids)

    # ---------------------------------------------------------------- Subscriber

    def CreateSubscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            if request.name in self._subscriptions:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, "Subscription already exists")
            if request.topic not in self._topics:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Topic not found ({request.topic})")
            deadline = request.ack_deadline_seconds or _DEFAULT_ACK_DEADLINE
            if not 1 <= deadline <= 600:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"ack_deadline_seconds must be in [1, 600]; got {deadline}",
                )
            self._subscriptions[request.name] = _Subscription(request.name, request.topic, deadline)
        return self._describe(self._subscriptions[request.name])

    @staticmethod
    def _describe(sub: _Subscription) -> Any:
        return _pb["Subscription"](
            name=sub.name, topic=sub.topic, ack_deadline_seconds=sub.ack_deadline
        )

    def GetSubscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            return self._describe(self._subscription(request.subscription, context))

    def DeleteSubscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self._subscription(request.subscription, context)
            del self._subscriptions[request.subscription]
            self._lock.notify_all()
        return empty_pb2.Empty()

    def Pull(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.max_messages <= 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_messages must be > 0")
        until = time.monotonic() + self.pull_wait
        with self._lock:
            while True:
                sub = self._subscription(request.subscription, context)
                now = time.monotonic()
                sub.expire(now)
                if sub.backlog or now >= until or self._stopping or not context.is_active():
                    break
                self._lock.wait(min(_TICK, until - now))
            received = self._take(sub, request.max_messages, sub.ack_deadline)
        return _pb["PullResponse"](received_messages=received)

    def Acknowledge(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            sub = self._subscription(request.subscription, context)
            for ack_id in request.ack_ids:
                sub.leases.pop(ack_id, None)
        return empty_pb2.Empty()

    def ModifyAckDeadline(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not 0 <= request.ack_deadline_seconds <= 600:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ack_deadline_seconds not in [0, 600]")
        with self._lock:
            sub = self._subscription(request.subscription, context)
            self._modify(sub, request.ack_ids, request.ack_deadline_seconds)
        return empty_pb2.Empty()

    def StreamingPull(
        self, requests: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        """Send messages as they arrive while a reader thread applies the client's acks,
        deadline changes and new stream ack deadline."""
        first = next(requests, None)
        if first is None:
            return
        with self._lock:
            sub = self._subscription(first.subscription, context)
        stream = {"deadline": first.stream_ack_deadline_seconds or _DEFAULT_ACK_DEADLINE}
        limit = first.max_outstanding_messages or 1000
        mine: set[str] = set()  # ack ids leased through this stream
        closed = threading.Event()

        def apply(request: Any) -> None:
            with self._lock:
                if request.stream_ack_deadline_seconds:
                    stream["deadline"] = request.stream_ack_deadline_seconds
                for ack_id in request.ack_ids:
                    sub.leases.pop(ack_id, None)
                for ack_id, seconds in zip(
                    request.modify_deadline_ack_ids, request.modify_deadline_seconds, strict=False
                ):
                    self._modify(sub, [ack_id], seconds)
                self._lock.notify_all()

        def read() -> None:
            try:
                for request in requests:
                    apply(request)
            except Exception:  # the stream was cancelled or the server stops
                pass
            finally:
                closed.set()
                with self._lock:
                    self._lock.notify_all()

        apply(first)
        threading.Thread(target=read, name="pubsub-server-stream", daemon=True).start()
        context.add_callback(closed.set)
        while True:
            with self._lock:
                while True:
                    if closed.is_set() or self._stopping or not context.is_active():
                        return
                    if self._subscriptions.get(sub.name) is not sub:
                        context.abort(grpc.StatusCode.NOT_FOUND, "Subscription was deleted")
                    sub.expire(time.monotonic())
                    mine &= sub.leases.keys()
                    room = min(limit - len(mine), 100)
                    if sub.backlog and room > 0:
                        break
                    self._lock.wait(_TICK)
                received = self._take(sub, room, stream["deadline"])
                mine.update(r.ack_id for r in received)
            yield _pb["StreamingPullResponse"](received_messages=received)
