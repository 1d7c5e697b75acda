"""Flower ``Grid``s of our own: ``InProcessGrid``, where the ServerApp talks to
ClientApps in this process, and ``MeteredGrid``, which meters Flower's own grid in a
deployment (training/federated/deployment.py) as the in-process one meters itself.

Flower's own simulation runs ClientApps on Ray, which on a small shared machine
took minutes to start (and once never did); this grid delivers each message to
its node's ``ClientApp`` directly, one after another. Every message still goes
through Flower's wire format both ways (protobuf, ``message_to_proto`` /
``message_from_proto``): what a client receives and what the server gets back are
what a SuperLink would carry, and ``Traffic`` counts those bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from uuid import uuid4

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from training.federated.errors import FederationError
from training.federated.wire import CLIENT, Traffic

SERVER_NODE = 0
PULL_SECONDS = 0.2


def by_market(replies: Iterable[Message]) -> list[Message]:
    """Replies in market order. Flower's strategies sample a round's clients in random
    order, node ids are random in a deployment, and the order of a float sum should
    not change the model: both grids hand replies over in this order."""

    def market(reply: Message) -> tuple[int, int]:
        if reply.has_error():
            return (1, reply.metadata.src_node_id)
        return (0, int(reply.content.config_records[CLIENT]["market"]))  # type: ignore[arg-type]

    return sorted(replies, key=market)


class InProcessGrid(Grid):
    def __init__(
        self, nodes: Mapping[int, tuple[ClientApp, Context]], traffic: Traffic, run_id: int = 1
    ) -> None:
        self.nodes = dict(nodes)
        self.traffic = traffic
        self._run = Run.create_empty(run_id)
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            # What a SuperLink stamps on a message it accepts (as Flower's InMemoryGrid).
            message_id = str(uuid4())
            message.metadata.__dict__["_run_id"] = self._run.run_id
            message.metadata.__dict__["_src_node_id"] = SERVER_NODE
            message.metadata.__dict__["_message_id"] = message_id
            app, context = self.nodes[message.metadata.dst_node_id]
            began = time.perf_counter()
            wire_in = message_to_proto(message)
            reply = app(message_from_proto(wire_in), context)
            wire_out = message_to_proto(reply)
            self.traffic.record(
                message,
                reply,
                sent_bytes=wire_in.ByteSize(),
                reply_bytes=wire_out.ByteSize(),
                seconds=time.perf_counter() - began,
            )
            self._replies[message_id] = message_from_proto(wire_out)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return by_market(self._replies.pop(i) for i in message_ids if i in self._replies)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


class MeteredGrid(Grid):
    """``inner`` (Flower's grid to the SuperLink), with every ``send_and_receive``
    metered into ``traffic`` (protobuf bytes, as ``InProcessGrid`` counts them; seconds
    are the whole exchange's), replies in market order, and a client's error reply
    raised as ``FederationError`` rather than left out of the average."""

    def __init__(self, inner: Grid, traffic: Traffic) -> None:
        self.inner = inner
        self.traffic = traffic

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        sent = {m.metadata.dst_node_id: m for m in messages}
        sizes = {node: message_to_proto(m).ByteSize() for node, m in sent.items()}
        began = time.perf_counter()
        waiting = set(self.inner.push_messages(sent.values()))
        got: list[Message] = []
        # Flower's own loop polls every 3 s; a round here is seconds long.
        while waiting and (timeout is None or time.perf_counter() - began < timeout):
            replies = list(self.inner.pull_messages(waiting))
            got += replies
            waiting -= {r.metadata.reply_to_message_id for r in replies}
            if waiting:
                time.sleep(PULL_SECONDS)
        seconds = time.perf_counter() - began
        got = by_market(got)
        for reply in got:
            node = reply.metadata.src_node_id
            if reply.has_error():
                raise FederationError(f"the client on node {node} failed: {reply.error.reason}")
            self.traffic.record(
                sent[node],
                reply,
                sent_bytes=sizes[node],
                reply_bytes=message_to_proto(reply).ByteSize(),
                seconds=seconds,
            )
        return got
