#!/usr/bin/env python3
"""Resident memory per idle keep-alive connection, HTTPS served by the core session's TLS
layer vs plain HTTP, on yuyo-smol (the `serve_tls` example).

For each mode: start the example, open N connections that each complete the TLS
handshake (for `tls`), send one signed PING, read the answer, and stay open, idle; the
server's RSS before and after, divided by N, is the cost of one idle connection.

usage: bench/tls_memory.py [N]   (run from the workspace root after
       `cargo build -p yuyo-smol --example serve_tls`)
"""
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import settle  # noqa: E402  (RSS read once the server settled)

EXAMPLE = os.environ.get("SERVE_TLS", "target/debug/examples/serve_tls")


def connect(port, context, request):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if context is not None:
        s = context.wrap_socket(s, server_hostname="localhost")
    s.sendall(request)
    reply = s.recv(4096)
    if not reply.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"unexpected reply: {reply[:80]!r}")
    return s


def measure(mode, count):
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([EXAMPLE, mode, tmp], stdout=subprocess.PIPE, text=True)
        try:
            line = server.stdout.readline().split()
            if len(line) != 2 or line[0] != "PORT":
                raise SystemExit(f"no port from the server: {line}")
            port = int(line[1])
            request = open(os.path.join(tmp, "ping.http"), "rb").read()
            context = None
            if mode == "tls":
                context = ssl.create_default_context(cafile=os.path.join(tmp, "ca.pem"))
                context.set_alpn_protocols(["http/1.1"])
            warm = [connect(port, context, request) for _ in range(20)]
            before = settle(server.pid)
            conns = [connect(port, context, request) for _ in range(count)]
            after = settle(server.pid)
            per_conn = (after - before) * 1024 / count
            print(f"{mode:5}: RSS {before} KiB -> {after} KiB with {count} idle connections: "
                  f"{per_conn:,.0f} bytes per connection")
            for s in conns + warm:
                s.close()
            return per_conn
        finally:
            server.kill()
            server.wait()


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 256)), hard))
    plain = measure("plain", count)
    tls = measure("tls", count)
    print(f"TLS costs {tls - plain:,.0f} bytes more per idle connection")


if __name__ == "__main__":
    main()
