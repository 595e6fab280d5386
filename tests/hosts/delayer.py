"""A link emulator for kernels without ``sch_netem``: packets sent to an NFQUEUE (an nftables
``queue`` rule on the router's forward hook) are held for ``delay ± jitter`` milliseconds
(uniform) and then accepted, or dropped with probability ``loss`` - what
``tc qdisc ... netem delay 2ms 1ms loss 1%`` does on a link.

It speaks the nfnetlink_queue protocol directly (a raw netlink socket; only packet ids are
copied, never payloads), so it needs no library and no compiler. Run it inside the router's
network namespace: ``ip netns exec NS python -m tests.hosts.delayer --queue 0 ...``. It prints
``ready`` once bound, and counts what it did on SIGTERM (``{"accepted": n, "dropped": m}``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import struct
import sys

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NF_DROP, NF_ACCEPT = 0, 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
SOL_NETLINK, NETLINK_NO_ENOBUFS = 270, 5
SO_RCVBUFFORCE = 33


def _attribute(kind: int, payload: bytes) -> bytes:
    header = struct.pack("=HH", 4 + len(payload), kind)
    padding = b"\0" * (-(4 + len(payload)) % 4)
    return header + payload + padding


def _message(kind: int, queue: int, attributes: bytes, seq: int, flags: int) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attributes
    return (
        struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, seq, 0) + body
    )


def _packet_ids(data: bytes) -> list[int]:
    """The ids of the queued packets in one receive buffer (several messages may share one)."""
    ids = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
        if length < 16:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            position = offset + 16 + 4  # past nlmsghdr and nfgenmsg
            while position + 4 <= offset + length:
                attr_len, attr_kind = struct.unpack_from("=HH", data, position)
                if attr_len < 4:
                    break
                if attr_kind & 0x7FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, position + 4)[0])
                position += (attr_len + 3) & ~3
        offset += (length + 3) & ~3
    return ids


class Delayer:
    def __init__(self, queue: int, delay_ms: float, jitter_ms: float, loss: float) -> None:
        self.queue = queue
        self.delay = delay_ms / 1000
        self.jitter = jitter_ms / 1000
        self.loss = loss
        self.accepted = 0
        self.dropped = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.sock.bind((0, 0))
        self.seq = 0

    def _send(self, kind: int, attributes: bytes, flags: int = NLM_F_REQUEST) -> None:
        self.seq += 1
        self.sock.send(_message(kind, self.queue, attributes, self.seq, flags))

    def bind(self) -> None:
        self._send(
            NFQNL_MSG_CONFIG,
            _attribute(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        self._expect_ack()
        self._send(
            NFQNL_MSG_CONFIG,
            _attribute(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        self._expect_ack()
        self.sock.setblocking(False)

    def _expect_ack(self) -> None:
        data = self.sock.recv(65536)
        length, kind = struct.unpack_from("=IH", data)
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, 16)
            if error != 0:
                raise OSError(-error, f"nfqueue config refused: {error}")

    def verdict(self, packet_id: int, verdict: int) -> None:
        self._send(
            NFQNL_MSG_VERDICT, _attribute(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
        )
        if verdict == NF_ACCEPT:
            self.accepted += 1
        else:
            self.dropped += 1

    def on_readable(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            for packet_id in _packet_ids(data):
                if random.random() < self.loss:
                    self.verdict(packet_id, NF_DROP)
                    continue
                hold = max(0.0, self.delay + random.uniform(-self.jitter, self.jitter))
                loop.call_later(hold, self.verdict, packet_id, NF_ACCEPT)


async def serve(args: argparse.Namespace) -> dict[str, int]:
    delayer = Delayer(args.queue, args.delay_ms, args.jitter_ms, args.loss)
    delayer.bind()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_reader(delayer.sock.fileno(), delayer.on_readable, loop)
    print("ready", flush=True)
    await stop.wait()
    return {"accepted": delayer.accepted, "dropped": delayer.dropped}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=2.0)
    parser.add_argument("--jitter-ms", type=float, default=1.0)
    parser.add_argument("--loss", type=float, default=0.01, help="probability, 0.01 = 1 %%")
    args = parser.parse_args(argv)
    counts = asyncio.run(serve(args))
    print(json.dumps(counts), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
