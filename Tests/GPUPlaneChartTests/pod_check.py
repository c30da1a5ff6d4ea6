#!/usr/bin/env python3
"""Starts the chart's rendered pods here, as a kubelet would lay them out, with the real daemons.

Run by ChartTests.swift as root after chart_check.py, with the OUT/daemons.json it wrote:

    python pod_check.py --daemons OUT/daemons.json --binaries .build/debug

For each values file it renders, in a network and mount namespace of its own (nothing of the
host changes: /etc and /usr/local/bin are overlays, /run a tmpfs, only loopback):
- with the bundled etcd, its members as rendered (environment, probes, data volume), each in a
  network namespace of its own on a bridge, their stable names in /etc/hosts, with this machine's
  etcd executable (Debian's 3.4, not the chart's 3.5 image): they must answer their probes and
  form one cluster; with an external etcd, one etcd on 127.0.0.1, every host the daemons'
  etcd.endpoints name mapped to it in /etc/hosts;
- every volume of the api-server and scheduler pods made as the kubelet makes them: ConfigMaps
  and Secrets as atomic-writer directories (`..data` and each file a symbolic link into it), files
  of defaultMode with fsGroup's group and read bit, emptyDirs setgid for fsGroup; Secrets the
  values say exist are made here as an operator would (a token, a key);
- each container in a mount namespace of its own with its volumeMounts bound, its command and
  arguments as rendered (/usr/local/bin/gpuplane-* are the built executables), its environment
  (fieldRef metadata.name is the pod's name), as runAsUser/runAsGroup with fsGroup as a
  supplementary group; init containers first, each to exit 0.
Then it checks the api-server's probes answer 200 on its port, that an admin token from the
admin-token-file Secret creates a tenant and a secret (so the key the init container copied was
accepted), that two scheduler replicas elect one leader under their pod names and the other takes
over when it gets SIGTERM, and that every daemon exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

failures: list[str] = []
# Contents of Secrets the values say exist, by (Secret, key), made by check_values_set (the TLS
# certificates and etcd password); the rest get a token or a key in Pod.make_volumes.
provided: dict[tuple[str, str], str] = {}
# The CA https:// calls trust, when the values set runs with TLS.
trusted: ssl.SSLContext | None = None


def fail(where: str, message: str) -> None:
    failures.append(f"{where}: {message}")
    print(f"FAIL {where}: {message}", file=sys.stderr, flush=True)


def wait_for(condition, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return condition()


def run(*command: str) -> None:
    subprocess.run(command, check=True)


# ---------------------------------------------------------------- inside one container's namespace


def container_main(spec_path: str) -> None:
    """Binds the container's mounts in this (new) mount namespace and execs its command."""
    spec = json.loads(Path(spec_path).read_text())
    for mount in spec["mounts"]:
        target = mount["path"]
        os.makedirs(target, exist_ok=True)
        run("mount", "--bind", mount["source"], target)
        if mount["readOnly"]:
            run("mount", "-o", "remount,bind,ro", target)
    os.chdir("/")
    command = ["setpriv", f"--reuid={spec['uid']}", f"--regid={spec['gid']}", f"--groups={','.join(map(str, spec['groups']))}",
               "--no-new-privs", "--"] + spec["command"] + spec["args"]
    os.execvpe("setpriv", command, spec["env"])


# ---------------------------------------------------------------- the kubelet's part


class Pod:
    """One pod: its volumes made under `root`, its containers started in their own namespaces."""

    def __init__(self, spec: dict, name: str, root: Path, logs: Path):
        self.spec = spec
        self.name = name
        self.root = root / name
        self.logs = logs
        security = spec["securityContext"]
        self.uid = security.get("runAsUser", 0)
        self.gid = security.get("runAsGroup", self.uid)
        self.fs_group = security.get("fsGroup")
        self.processes: dict[str, subprocess.Popen] = {}
        self.made: dict[str, dict[str, str]] = {}
        self.make_volumes()

    def make_volumes(self) -> None:
        for name, volume in self.spec["volumes"].items():
            path = self.root / name
            path.mkdir(parents=True)
            if "emptyDir" in volume:
                os.chmod(path, 0o777)
                if self.fs_group is not None:
                    os.chown(path, 0, self.fs_group)
                    os.chmod(path, 0o2777)
                continue
            # The atomic writer: files in a timestamped directory, ..data pointing at it, and
            # each file's name a symbolic link through ..data.
            stamp = path / "..2026_12_04_00_00_00.000000001"
            stamp.mkdir()
            contents = {}
            for item in volume["files"]:
                content = item["content"]
                if content is None:  # a Secret the values say exists: made as an operator would
                    content = provided.get((volume["name"], item["key"])) or {"admin-tokens": f"gpa_{secrets.token_urlsafe(32)}\n",
                               "secret.key": f"k1 {base64.b64encode(secrets.token_bytes(32)).decode()}\n"}[item["key"]]
                contents[item["path"]] = content
                file = stamp / item["path"]
                file.write_text(content)
                mode = volume["defaultMode"]
                if self.fs_group is not None:
                    os.chown(file, 0, self.fs_group)
                    mode |= 0o440  # the kubelet's read-only mask for fsGroup
                os.chmod(file, mode)
                (path / item["path"]).symlink_to(Path("..data") / item["path"])
            (path / "..data").symlink_to(stamp.name)
            for directory in (path, stamp):
                if self.fs_group is not None:
                    os.chown(directory, 0, self.fs_group)
                os.chmod(directory, 0o2755 if self.fs_group is not None else 0o755)
            self.made[name] = contents

    def start(self, container: dict, pod_name: str, netns: str | None = None) -> subprocess.Popen:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
        for key, value in container["env"].items():
            if isinstance(value, dict):
                if value.get("fieldRef") != "metadata.name":
                    raise SystemExit(f"{container['name']}: {key} from {value}, which this check does not follow")
                value = pod_name
            # $(NAME) names a variable defined before, as the kubelet expands it.
            env[key] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)
        groups = [self.gid] + ([self.fs_group] if self.fs_group is not None else [])
        spec = {"mounts": [{"source": str(self.root / m["name"]), "path": m["path"], "readOnly": m["readOnly"]} for m in container["mounts"]],
                "uid": self.uid, "gid": self.gid, "groups": groups, "command": container["command"], "args": container["args"], "env": env}
        spec_path = self.root / f"{pod_name}-{container['name']}.json"
        spec_path.write_text(json.dumps(spec))
        log = open(self.logs / f"{pod_name}-{container['name']}.log", "w")
        prefix = ["ip", "netns", "exec", netns] if netns else []
        process = subprocess.Popen(prefix + ["unshare", "-m", "--propagation", "private", sys.executable, __file__, "--container", str(spec_path)],
                                   stdout=log, stderr=subprocess.STDOUT)
        self.processes[f"{pod_name}/{container['name']}"] = process
        return process

    def run_init(self, pod_name: str, where: str) -> bool:
        for init in self.spec["initContainers"]:
            status = self.start(init, pod_name).wait(timeout=30)
            if status != 0:
                fail(where, f"init container {init['name']} exited {status}: {self.log(pod_name, init['name'])}")
                return False
        return True

    def log(self, pod_name: str, container: str) -> str:
        path = self.logs / f"{pod_name}-{container}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def stop(process: subprocess.Popen, where: str, what: str, clean: tuple[int, ...] = (0,), log=lambda: "") -> None:
    """SIGTERM, then the exit status must be one of `clean` within 30 s; `log` tells why not."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        fail(where, f"{what} did not stop within 30 s of SIGTERM: {log()[-2500:]}")
        return
    if status not in clean:
        fail(where, f"{what} exited {status} on SIGTERM")


def http(method: str, url: str, token: str | None = None, body: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5, context=trusted if url.startswith("https://") else None) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except OSError as error:
        return 0, str(error)


def check_values_set(daemons: dict, work: Path) -> None:
    where = daemons["values"]
    root = work / where.replace("/", "_")
    logs = root / "logs"
    logs.mkdir(parents=True)
    global trusted
    provided.clear()
    trusted = None
    tls = daemons.get("tls", {})
    if tls.get("apiServerSecret") or tls.get("etcdSecret"):
        make_certificates(tls, root / "certs", sorted({urlparse(e).hostname for e in daemons["etcdEndpoints"]}))

    if daemons["pods"].get("etcd"):
        members = start_members(daemons["pods"]["etcd"], root, logs, where)
        try:
            if members:
                check_api_server(daemons, root, logs, where)
                check_schedulers(daemons, root, logs, where)
        finally:
            for name, process in members.items():
                # etcd ends by raising the signal again once it has stopped cleanly.
                stop(process, where, f"etcd member {name}", clean=(0, -signal.SIGTERM))
            remove_member_links(daemons["pods"]["etcd"]["replicas"])
        return

    # An external etcd: one on loopback, every endpoint's host this machine.
    endpoints = [urlparse(e) for e in daemons["etcdEndpoints"]]
    ports = sorted({e.port or 2379 for e in endpoints})
    hostnames = sorted({e.hostname for e in endpoints})
    with open("/etc/hosts", "a") as hosts:
        for host in hostnames:
            hosts.write(f"127.0.0.1 {host}\n")
    etcd_tls = bool(tls.get("etcdSecret"))
    scheme = "https" if etcd_tls else "http"
    clients = ",".join(f"{scheme}://127.0.0.1:{p}" for p in ports)
    certs = root / "certs"
    tls_flags = ["--cert-file", str(certs / "server.pem"), "--key-file", str(certs / "server-key.pem"),
                 "--trusted-ca-file", str(certs / "ca.pem"), "--client-cert-auth",
                 "--listen-metrics-urls", "http://127.0.0.1:2381"] if etcd_tls else []
    etcd_log = open(logs / "etcd.log", "w")
    etcd = subprocess.Popen(["etcd", "--name", "e", "--data-dir", str(root / "etcd"), "--listen-client-urls", clients,
                             "--advertise-client-urls", clients, "--listen-peer-urls", "http://127.0.0.1:2380",
                             "--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--initial-cluster", "e=http://127.0.0.1:2380"]
                            + tls_flags, stdout=etcd_log, stderr=subprocess.STDOUT)
    try:
        health = "http://127.0.0.1:2381/health" if etcd_tls else f"http://127.0.0.1:{ports[0]}/health"
        if not wait_for(lambda: http("GET", health)[0] == 200, 20):
            fail(where, "etcd did not start")
            return
        if tls.get("etcdUsername") and not enable_etcd_auth(tls, f"{scheme}://127.0.0.1:{ports[0]}", certs if etcd_tls else None, where):
            return
        check_api_server(daemons, root, logs, where)
        check_schedulers(daemons, root, logs, where)
    finally:
        etcd.terminate()
        etcd.wait()


def make_certificates(tls: dict, directory: Path, hostnames: list[str]) -> None:
    """Certificates from scripts/dev-certs (the etcd endpoints' names in the server's), put in
    the Secrets the values name as an operator would: the api-server's tls.crt/tls.key, and
    etcd's ca.crt with a client certificate; https:// calls here trust the CA."""
    global trusted
    script = Path(__file__).resolve().parents[2] / "scripts" / "dev-certs"
    names = [argument for host in hostnames for argument in ("--name", host)]
    subprocess.run([str(script), str(directory), *names], check=True, capture_output=True)
    read = lambda name: (directory / name).read_text()
    if tls.get("apiServerSecret"):
        provided[(tls["apiServerSecret"], "tls.crt")] = read("server.pem")
        provided[(tls["apiServerSecret"], "tls.key")] = read("server-key.pem")
    if tls.get("etcdSecret"):
        provided[(tls["etcdSecret"], "ca.crt")] = read("ca.pem")
        provided[(tls["etcdSecret"], "tls.crt")] = read("client.pem")
        provided[(tls["etcdSecret"], "tls.key")] = read("client-key.pem")
    trusted = ssl.create_default_context(cafile=str(directory / "ca.pem"))


def enable_etcd_auth(tls: dict, endpoint: str, certs: Path | None, where: str) -> bool:
    """etcd auth on, with root and the values' user allowed /gpuplane/ only; its password goes in
    the Secret the values name."""
    password = secrets.token_urlsafe(16)
    provided[(tls["etcdPasswordSecret"], "password")] = password + "\n"
    user = tls["etcdUsername"]
    base = ["etcdctl", "--endpoints", endpoint]
    if certs is not None:
        base += ["--cacert", str(certs / "ca.pem"), "--cert", str(certs / "client.pem"), "--key", str(certs / "client-key.pem")]
    for arguments in (["user", "add", f"root:{secrets.token_urlsafe(16)}"], ["user", "grant-role", "root", "root"],
                      ["user", "add", f"{user}:{password}"], ["role", "add", user],
                      ["role", "grant-permission", user, "--prefix=true", "readwrite", "/gpuplane/"],
                      ["user", "grant-role", user, user], ["auth", "enable"]):
        done = subprocess.run(base + arguments, capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"})
        if done.returncode != 0:
            fail(where, f"etcdctl {' '.join(arguments[:2])}: {done.stderr[-300:]}")
            return False
    return True


def remove_member_links(replicas: int) -> None:
    """The bridge, veths and namespaces of the bundled etcd's members, if there: after a run, and
    before one (a namespace still held by a dying process keeps its veth pair a while, and the
    next run's `ip link add` would fail on the leftover)."""
    for index in range(replicas):
        subprocess.run(["ip", "link", "del", f"gpvh{index}"], capture_output=True)
        subprocess.run(["ip", "netns", "del", f"gpm{index}"], capture_output=True)
    subprocess.run(["ip", "link", "del", "gpbr0"], capture_output=True)


def start_members(spec: dict, root: Path, logs: Path, where: str) -> dict[str, subprocess.Popen]:
    """The bundled etcd's members as rendered, each in a network namespace of its own on a bridge,
    its stable name (<pod>.<headless service>...) in /etc/hosts; they must form one cluster."""
    container = spec["containers"][0]
    remove_member_links(spec["replicas"])
    run("ip", "link", "add", "gpbr0", "type", "bridge")
    run("ip", "addr", "add", "10.99.0.1/24", "dev", "gpbr0")
    run("ip", "link", "set", "gpbr0", "up")
    hosts = open("/etc/hosts", "a")
    members: dict[str, subprocess.Popen] = {}
    addresses = []
    for index in range(spec["replicas"]):
        name, netns, address = f"{spec['name']}-{index}", f"gpm{index}", f"10.99.0.{10 + index}"
        run("ip", "netns", "add", netns)
        run("ip", "link", "add", f"gpvh{index}", "type", "veth", "peer", "name", f"gpve{index}")
        run("ip", "link", "set", f"gpve{index}", "netns", netns)
        run("ip", "link", "set", f"gpvh{index}", "master", "gpbr0", "up")
        run("ip", "netns", "exec", netns, "ip", "addr", "add", f"{address}/24", "dev", f"gpve{index}")
        run("ip", "netns", "exec", netns, "ip", "link", "set", f"gpve{index}", "up")
        run("ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up")
        advertised = urlparse(re.sub(r"\$\(ETCD_NAME\)", name, container["env"]["ETCD_INITIAL_ADVERTISE_PEER_URLS"])).hostname
        hosts.write(f"{address} {advertised}\n")
        addresses.append(address)
    hosts.close()
    for index in range(spec["replicas"]):
        name = f"{spec['name']}-{index}"
        pod = Pod(spec, f"etcd-{index}", root, logs)
        members[name] = pod.start(container, name, netns=f"gpm{index}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container["probes"][probe]
        port = container["ports"].get(get["port"], get["port"])
        for name, address in zip(members, addresses):
            if not wait_for(lambda: http("GET", f"http://{address}:{port}{get['path']}")[0] == 200, 60, 0.25):
                fail(where, f"etcd member {name}'s {probe} GET {get['path']} does not answer 200: "
                            + (logs / f"{name}-{container['name']}.log").read_text(errors="replace")[-1500:])
                return members
    status, body = http("POST", f"http://{addresses[0]}:{container['ports']['client']}/v3/cluster/member/list", body={})
    listed = sorted(m.get("name", "") for m in json.loads(body).get("members", [])) if status == 200 else []
    if listed != sorted(members):
        fail(where, f"the etcd members do not form one cluster of {sorted(members)}: {status} {body[:300]}")
    return members


def check_api_server(daemons: dict, root: Path, logs: Path, where: str) -> None:
    pod = Pod(daemons["pods"]["apiServer"], "api-server", root, logs)
    pod_name = pod.spec["name"] + "-7c9d5b6f4-k2x9z"
    if not pod.run_init(pod_name, where):
        return
    container = pod.spec["containers"][0]
    process = pod.start(container, pod_name)
    try:
        port = container["ports"]["http"]
        scheme = "https" if any(get.get("scheme") == "HTTPS" for get in container["probes"].values()) else "http"
        for probe, get in container["probes"].items():
            target = container["ports"].get(get["port"], get["port"])
            url = f"{get.get('scheme', 'HTTP').lower()}://127.0.0.1:{target}{get['path']}"
            if not wait_for(lambda: process.poll() is not None or http("GET", url)[0] == 200, 30):
                fail(where, f"the api-server's {probe} GET {get['path']} does not answer 200")
            if process.poll() is not None:
                fail(where, f"the api-server exited {process.returncode}: {pod.log(pod_name, 'api-server')}")
                return
        # The admin token the chart's Secret (or the operator's) holds, and the sealing key.
        token_volume = next(m["name"] for m in container["mounts"] if m["path"].endswith("admin-tokens"))
        token = next(iter(pod.made[token_volume].values())).split()[0]
        base = f"{scheme}://127.0.0.1:{port}"
        if scheme == "https" and http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200:
            fail(where, "the api-server answers plain HTTP although it was given a TLS Secret")
        status, body = http("POST", f"{base}/v1/tenants", token, {"name": "acme", "plan": "scale"})
        if status != 201:
            fail(where, f"POST /v1/tenants with the admin token: {status} {body[:300]}")
        status, body = http("POST", f"{base}/v1/secrets?tenant=acme", token, {"name": "db", "data": {"PASSWORD": "hunter2-chart"}})
        if status != 201:
            fail(where, f"POST /v1/secrets (sealing with secret-key-file): {status} {body[:300]}")
        status, body = http("GET", f"{base}/v1/secrets/db?tenant=acme", token)
        if status != 200 or "hunter2-chart" in body:
            fail(where, f"GET /v1/secrets/db: {status} {body[:300]}")
        if "hunter2-chart" in pod.log(pod_name, "api-server"):
            fail(where, "a secret's value reached the api-server's log")
    finally:
        stop(process, where, "the api-server")


def check_schedulers(daemons: dict, root: Path, logs: Path, where: str) -> None:
    pod = Pod(daemons["pods"]["scheduler"], "scheduler", root, logs)
    container = pod.spec["containers"][0]
    names = [pod.spec["name"] + suffix for suffix in ("-6f7d8c9b5-a1b2c", "-6f7d8c9b5-d3e4f")]
    processes = {}
    for name in names:
        if not pod.run_init(name, where):
            return
        processes[name] = pod.start(container, name)
    try:
        def leader() -> str | None:
            for name in names:
                if f"identity={name}" in pod.log(name, container["name"]) and "leading" in pod.log(name, container["name"]):
                    return name
            return None
        first = wait_for(leader, 30)
        if not first:
            fail(where, "no scheduler replica leads: " + " | ".join(pod.log(n, container["name"])[-600:] for n in names))
            return
        for name, process in processes.items():
            if process.poll() is not None:
                fail(where, f"scheduler {name} exited {process.returncode}: {pod.log(name, container['name'])}")
        # Its metrics on the port the pod declares. Both replicas share this network namespace
        # (a kubelet gives each its own), so one binds the port and the other logs that it
        # cannot and goes on: whichever answers is a replica that has seen a term begin.
        port = container["ports"]["metrics"]
        metrics = ""
        def served() -> bool:
            nonlocal metrics
            status, metrics = http("GET", f"http://127.0.0.1:{port}/metrics")
            return status == 200 and "gpuplane_scheduler_leader" in metrics
        if not wait_for(served, 30):
            fail(where, f"the scheduler's GET /metrics on its metrics port {port} does not answer: {metrics[:300]}")
        elif "# TYPE gpuplane_scheduler_pass_duration_seconds histogram" not in metrics or "gpuplane_store_txn_requests_total" not in metrics:
            fail(where, f"the scheduler's /metrics lacks its pass histogram or the store's counters: {metrics[:600]}")
        stop(processes[first], where, f"the leading scheduler {first}", log=lambda: pod.log(first, container["name"]))
        second = next(n for n in names if n != first)
        if not wait_for(lambda: f"identity={second}" in pod.log(second, container["name"]), 30):
            fail(where, f"scheduler {second} did not take over when {first} stopped")
    finally:
        for name, process in processes.items():
            stop(process, where, f"scheduler {name}")


def namespace_main(arguments: argparse.Namespace) -> int:
    """In new network and mount namespaces: loopback up, /etc and /usr/local/bin overlays, /run a tmpfs."""
    run("ip", "link", "set", "lo", "up")
    work = Path(arguments.work)
    for target, name in (("/etc", "etc"), ("/usr/local/bin", "bin"), ("/var/lib", "varlib")):
        upper, scratch = work / "overlay" / name / "upper", work / "overlay" / name / "work"
        upper.mkdir(parents=True)
        scratch.mkdir(parents=True)
        run("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={target},upperdir={upper},workdir={scratch}", target)
    run("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run")
    binaries = Path(arguments.binaries).resolve()
    for executable, target in (("gpuplane-api-server", binaries / "gpuplane-api-server"),
                               ("gpuplane-scheduler", binaries / "gpuplane-scheduler"), ("etcd", Path(shutil.which("etcd")))):
        link = Path("/usr/local/bin") / executable
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(target)
    original_hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else ""
    for daemons in json.loads(Path(arguments.daemons).read_text()):
        Path("/etc/hosts").write_text(original_hosts)
        before = len(failures)
        check_values_set(daemons, work)
        print(f"{daemons['values']}: {'ok' if len(failures) == before else 'FAILED'}", flush=True)
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--daemons")
    parser.add_argument("--binaries")
    parser.add_argument("--container")
    parser.add_argument("--work")
    arguments = parser.parse_args()
    if arguments.container:
        container_main(arguments.container)
        return 1
    if arguments.work:
        return namespace_main(arguments)
    if os.geteuid() != 0:
        print("pod_check.py needs root (namespaces, mounts, setpriv)", file=sys.stderr)
        return 2
    for tool in ("unshare", "setpriv", "etcd", "ip", "mount"):
        if shutil.which(tool) is None:
            print(f"pod_check.py needs {tool}", file=sys.stderr)
            return 2
    # The work directory is outside /tmp (a pod's /tmp is an emptyDir mounted over it) and must
    # be reachable by the pods' user.
    work = Path(tempfile.mkdtemp(prefix="gpuplane-pods-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    try:
        return subprocess.run(["unshare", "-m", "-n", "--propagation", "private", sys.executable, __file__,
                               "--daemons", arguments.daemons, "--binaries", arguments.binaries, "--work", str(work)]).returncode
    finally:
        if os.environ.get("GPUPLANE_POD_CHECK_KEEP"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
