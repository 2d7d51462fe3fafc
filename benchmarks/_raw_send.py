"""The baseline every gateway figure is divided by: the CPU one process spends
on a paced ``sendall`` of a message to each of ``fanout`` reading TCP peers."""

from __future__ import annotations

import multiprocessing as mp
import socket
import threading
import time
from multiprocessing.queues import Queue


def _sender(
    port: int, messages: list[bytes], fanout: int, rate: float, seconds: float, out: Queue[float]
) -> None:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(fanout)]
    start = time.monotonic()
    cpu0 = time.process_time()
    sent = 0
    while (now := time.monotonic()) < start + seconds:
        message = messages[sent % len(messages)]
        for sock in socks:
            sock.sendall(message)
        sent += 1
        time.sleep(max(0.0, start + sent / rate - now))
    out.put((time.process_time() - cpu0) / (sent * fanout))
    for sock in socks:
        sock.close()


def raw_send_per_message(
    messages: list[bytes], *, fanout: int, rate: float, seconds: float
) -> float:
    """CPU seconds per ``sendall`` of one message (cycling through ``messages``)
    over TCP to a reading peer, ``rate`` messages a second to each of ``fanout``."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def read(conn: socket.socket) -> None:
        with conn:
            while conn.recv(1 << 20):
                pass

    def accept() -> None:
        for _ in range(fanout):
            conn, _ = listener.accept()
            threading.Thread(target=read, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    context = mp.get_context("fork")
    out: Queue[float] = context.Queue()
    process = context.Process(target=_sender, args=(port, messages, fanout, rate, seconds, out))
    process.start()
    result = out.get(timeout=seconds + 30)
    process.join()
    listener.close()
    return result
