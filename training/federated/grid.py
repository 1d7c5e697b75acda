"""An in-process Flower ``Grid``: the ServerApp talks to ClientApps in this process.

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

from training.federated.wire import Traffic

SERVER_NODE = 0


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
        # By node: Flower's strategies sample a round's clients in random order, and
        # the order of a float sum should not change the model.
        replies = [self._replies.pop(i) for i in message_ids if i in self._replies]
        return sorted(replies, key=lambda m: m.metadata.src_node_id)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
