#!/usr/bin/env python3
"""The api-server's memory per idle keep-alive connection (docs/benchmarks.md, "Memory per
connection").

Starts etcd and the api-server BINARY on loopback (temporary data, free ports), opens N plain
connections that each send one `GET /healthz` (or, with `none`, nothing) and stay open, and
prints the api-server's VmRSS and RssAnon before and after, and per connection.

    scripts/conn-memory.py BINARY [N] [healthz|none]

With WRAP set, the api-server runs under it, e.g. WRAP="heaptrack -o out" (then
`heaptrack_print -f out.zst --print-peaks 1`).
"""
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import base64


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_healthz(sock):
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("connection closed before the answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(4096)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    mode = sys.argv[3] if len(sys.argv) > 3 else "healthz"
    if mode not in ("healthz", "none"):
        sys.exit("the third argument is healthz or none")
    resource.setrlimit(resource.RLIMIT_NOFILE, (count + 1000, count + 1000))
    work = tempfile.mkdtemp(prefix="conn-memory-")
    client, peer, port = free_port(), free_port(), free_port()
    etcd = subprocess.Popen(
        ["etcd", "--data-dir", work + "/etcd", "--listen-client-urls", f"http://127.0.0.1:{client}",
         "--advertise-client-urls", f"http://127.0.0.1:{client}", "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}", "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(work + "/admin", "w") as f:
        f.write("gp_admin_" + os.urandom(16).hex())
    with open(work + "/secret.key", "w") as f:
        f.write("conn-memory " + base64.b64encode(os.urandom(32)).decode() + "\n")
    os.chmod(work + "/secret.key", 0o600)
    api = subprocess.Popen(
        os.environ.get("WRAP", "").split() + [
            binary, "--etcd.endpoints", f"http://127.0.0.1:{client}", "--port", str(port), "--secret-key-file", work + "/secret.key",
            "--admin-token-file", work + "/admin", "--log-level", "error", "--log-destination", "stderr",
            "--max-connections-per-source", "0", "--auth-failure-limit", "0"],
        stdout=subprocess.DEVNULL, stderr=open(work + "/api-server.log", "w"))

    def server_pid():
        if not os.environ.get("WRAP"):
            return api.pid
        found = subprocess.run(["pgrep", "-n", "-f", f"{binary} --etcd.endpoints"], capture_output=True, text=True).stdout.split()
        return int(found[-1])

    def memory():
        fields = dict(line.split(":", 1) for line in open(f"/proc/{server_pid()}/status"))
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["RssAnon"].split()[0]) / 1024

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port)) as s:
                    get_healthz(s)
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("the api-server did not answer within 60 s; see " + work + "/api-server.log")
                time.sleep(0.1)
        # Warm up: the first connections make the pools and caches every later one shares.
        warm = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
        for s in warm:
            get_healthz(s)
        for s in warm:
            s.close()
        time.sleep(2)
        before = memory()
        held = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            if mode == "healthz":
                get_healthz(s)
            held.append(s)
        time.sleep(3)
        after = memory()
        print(f"{count} idle connections ({mode}): RSS {before[0]:.1f} -> {after[0]:.1f} MiB, "
              f"anonymous {before[1]:.1f} -> {after[1]:.1f} MiB: {(after[1] - before[1]) * 1024 / count:.1f} KiB anonymous a connection")
        for s in held:
            s.close()
    finally:
        if os.environ.get("WRAP"):
            # The wrapper does not pass its SIGTERM on: end the api-server itself (heaptrack
            # then writes its file).
            try:
                os.kill(server_pid(), 15)
                api.wait(timeout=120)
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
        api.terminate()
        etcd.terminate()
        api.wait()
        etcd.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
