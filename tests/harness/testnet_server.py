"""The servers of the test "internet" (run inside its network namespace by testnet.py):
HTTP on 80 and 8080, HTTPS on 443 (a certificate from the test CA), TCP echo on 7000 and
UDP echo on 7000, on every address of the namespace.

HTTP answers `GET /` with `testnet <address it was reached at> host=<Host>`, `GET
/bytes/<n>` with n bytes, and `POST /sink` with how many bytes the body had."""

from __future__ import annotations

import argparse
import socket
import socketserver
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HTTP_PORTS = (80, 8080)
HTTPS_PORT = 443
ECHO_PORT = 7000
CHUNK = 1 << 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/bytes/"):
            size = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            block = b"x" * CHUNK
            while size > 0:
                self.wfile.write(block[: min(size, CHUNK)])
                size -= CHUNK
            return
        local = self.connection.getsockname()[0]
        self._reply(f"testnet {local} host={self.headers.get('Host', '')}\n".encode())

    def do_POST(self) -> None:
        remaining = int(self.headers.get("Content-Length", "0"))
        total = 0
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, CHUNK))
            if not chunk:
                break
            total += len(chunk)
            remaining -= len(chunk)
        self._reply(f"{total}\n".encode())

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class TcpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def udp_echo(address: str) -> None:
    """One socket per address: a reply must come from the address the request went to."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, ECHO_PORT))
    while True:
        data, peer = sock.recvfrom(65536)
        sock.sendto(data, peer)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--address", action="append", required=True)
    args = parser.parse_args()
    servers: list[socketserver.BaseServer] = [Server(("0.0.0.0", port), Handler) for port in HTTP_PORTS]
    tls = Server(("0.0.0.0", HTTPS_PORT), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    servers += [tls, EchoServer(("0.0.0.0", ECHO_PORT), TcpEcho)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    for address in args.address:
        threading.Thread(target=udp_echo, args=(address,), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
