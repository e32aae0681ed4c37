#!/usr/bin/env python3
"""Memory checks of one running server (used by bench/load.sh):

1. resident memory per idle keep-alive connection: RSS before and after opening N
   connections that each served one signed PING and then stay open, idle;
2. no allocation proportional to a declared Content-Length: RSS before and after heads
   declaring 1 GiB bodies (answered 413 without reading them).

usage: memory.py PID PORT SIGNATURE TIMESTAMP PING_BODY_FILE [N]
"""
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settle(pid):
    # RSS is read after the server had a moment to finish the last accept; bounded.
    last = rss_kib(pid)
    for _ in range(20):
        time.sleep(0.05)
        now = rss_kib(pid)
        if now == last:
            return now
        last = now
    return last


def main():
    pid, port, signature, timestamp, body_file = sys.argv[1:6]
    count = int(sys.argv[6]) if len(sys.argv) > 6 else 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 256)), hard))
    body = open(body_file, "rb").read()
    request = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Signature-Ed25519: {signature}\r\nX-Signature-Timestamp: {timestamp}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    # Warm up: the first connections allocate per-thread and per-runtime state.
    # (20 + 1000 stays under the default cap of 1024 connections.)
    warm = [socket.create_connection(("127.0.0.1", int(port)), timeout=10) for _ in range(20)]
    for s in warm:
        s.sendall(request)
        s.recv(4096)
    before = settle(pid)
    conns = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
        s.sendall(request)
        reply = s.recv(4096)
        if not reply.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"unexpected reply: {reply[:80]!r}")
        conns.append(s)
    after = settle(pid)
    per_conn = (after - before) * 1024 / count
    print(f"idle keep-alive: RSS {before} KiB -> {after} KiB with {count} idle connections: "
          f"{per_conn:,.0f} bytes per connection")
    for s in conns + warm:
        s.close()

    before = settle(pid)
    answers = {}
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", int(port)), timeout=2)
        s.sendall(
            (
                "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"X-Signature-Ed25519: {signature}\r\nX-Signature-Timestamp: {timestamp}\r\n"
                "Content-Length: 1073741824\r\n\r\n"
            ).encode()
        )
        try:
            reply = s.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace") or "(closed)"
        except TimeoutError:
            reply = "(no answer in 2 s: waiting for the body)"
        answers[reply] = answers.get(reply, 0) + 1
        s.close()
    after = settle(pid)
    print(f"1 GiB Content-Length x20: RSS {before} KiB -> {after} KiB "
          f"({after - before:+} KiB); answers: {answers}")


if __name__ == "__main__":
    main()
