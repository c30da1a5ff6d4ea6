#!/usr/bin/env bash
# Installs the gpuplane node-agent on a Debian/Ubuntu GPU host, from the unpacked release tarball
# (bin/gpuplane-node-agent and systemd/gpuplane-node-agent.service next to this script). Run it
# as root. Each step is printed ("==> ..."):
#   1. checks the host: NVML loadable, the container engine's socket answering, CDI specs for
#      the GPUs (made with `nvidia-ctk cdi generate` when the NVIDIA container toolkit is there),
#      the api-server reachable and verified with the CA, and the token accepted (before
#      anything is written, so a failed check leaves the host as it was);
#   2. installs the agent binary (/usr/local/bin) and its systemd unit (/etc/systemd/system);
#   3. writes /etc/gpuplane/node-agent.conf and the node token (/etc/gpuplane/node.token, 0600);
#   4. enables and starts the unit (systemd), or, where systemd is not PID 1 (a container), starts
#      the agent in the background with a pid file and a log file;
#   5. waits until the node is Ready in the API, printing its conditions.
# Idempotent: a second run with the same flags changes nothing (and restarts nothing).
#
# usage: install-node.sh --api-server URL (--token-file FILE | --token-stdin) [options]
#        install-node.sh --uninstall [--prefix DIR]
#   --api-server URL       the api-server, e.g. https://gpuplane-api.internal:8080; several
#                          (comma-separated, or the flag repeated): the agent moves to the next
#                          when one stops answering; each is checked
#   --token-file FILE      a node token for this node (POST /v1/tokens {"role":"node","node":NAME})
#   --token-stdin          read the node token from standard input instead
#                          (on a rerun both may be left out: the installed token is kept)
#   --ca-file FILE         the CA certificate that signed the api-server's (for https://)
#   --node-name NAME       this node's name (default: the host name)
#   --gpu-mode MODE        dedicated (default) | large | shared
#   --engine-socket PATH   the engine's API socket (default /run/podman/podman.sock)
#   --address ADDRESS      where the gateway reaches this node's containers
#   --nvml-library LIB     NVML (default libnvidia-ml.so.1)
#   --cdi-gpu-kind KIND    the GPUs' CDI kind (default nvidia.com/gpu)
#   --cdi-spec-dir DIR     a folder to look for CDI specs in (default /etc/cdi and /var/run/cdi;
#                          may be repeated)
#   --set KEY=VALUE        any other node-agent configuration key (may be repeated), e.g.
#                          --set pod-subnet=10.251.7.0/24
#   --prefix DIR           install under DIR (DIR/usr/local/bin, DIR/etc, DIR/var, DIR/run)
#                          instead of / (then the agent is started directly, not by systemd)
#   --no-systemd           start the agent directly even where systemd runs
#   --wait-timeout SECONDS how long to wait for the node to be Ready (default 180; 0: no wait)
#   --uninstall            stop the agent and remove what this script installed (the containers
#                          it runs are left alone; the Node stays in the API until an admin
#                          deletes it)
set -euo pipefail

prog="install-node.sh"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
fail() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }
usage_error() { printf '%s: %s (see --help)\n' "$prog" "$*" >&2; exit 2; }

api_server=""
token_file=""
token_stdin=0
ca_file=""
node_name=""
gpu_mode="dedicated"
engine_socket="/run/podman/podman.sock"
address=""
nvml_library="libnvidia-ml.so.1"
cdi_kind="nvidia.com/gpu"
cdi_dirs=()
extra_keys=()
prefix="/"
no_systemd=0
wait_timeout=180
uninstall=0

need_value() { if [ $# -lt 2 ] || [ -z "$2" ]; then usage_error "$1 needs a value"; fi; }
while [ $# -gt 0 ]; do
    case "$1" in
        --api-server) need_value "$@"; api_server="${api_server:+$api_server,}$2"; shift 2 ;;
        --token-file) need_value "$@"; token_file="$2"; shift 2 ;;
        --token-stdin) token_stdin=1; shift ;;
        --ca-file) need_value "$@"; ca_file="$2"; shift 2 ;;
        --node-name) need_value "$@"; node_name="$2"; shift 2 ;;
        --gpu-mode) need_value "$@"; gpu_mode="$2"; shift 2 ;;
        --engine-socket) need_value "$@"; engine_socket="$2"; shift 2 ;;
        --address) need_value "$@"; address="$2"; shift 2 ;;
        --nvml-library) need_value "$@"; nvml_library="$2"; shift 2 ;;
        --cdi-gpu-kind) need_value "$@"; cdi_kind="$2"; shift 2 ;;
        --cdi-spec-dir) need_value "$@"; cdi_dirs+=("$2"); shift 2 ;;
        --set) need_value "$@"; extra_keys+=("$2"); shift 2 ;;
        --prefix) need_value "$@"; prefix="$2"; shift 2 ;;
        --no-systemd) no_systemd=1; shift ;;
        --wait-timeout) need_value "$@"; wait_timeout="$2"; shift 2 ;;
        --uninstall) uninstall=1; shift ;;
        -h|--help) sed -n '2,42p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done

[ "$(id -u)" = 0 ] || fail "run me as root (sudo $0 ...): the agent needs the engine's root socket and NVML"
case "$prefix" in /*) ;; *) usage_error "--prefix must be an absolute path, not '$prefix'" ;; esac
prefix="${prefix%/}"
bin_dir="$prefix/usr/local/bin"
etc_dir="$prefix/etc/gpuplane"
unit_dir="$prefix/etc/systemd/system"
state_dir="$prefix/var/lib/gpuplane"
log_dir="$prefix/var/log/gpuplane"
agent="$bin_dir/gpuplane-node-agent"
unit="$unit_dir/gpuplane-node-agent.service"
config="$etc_dir/node-agent.conf"
installed_token="$etc_dir/node.token"
pid_file="$state_dir/node-agent.pid"
log_file="$log_dir/node-agent.log"

# systemd runs the unit when it is PID 1, the install is to / and --no-systemd is not given.
use_systemd=0
if [ "$no_systemd" = 0 ] && [ -z "$prefix" ] && [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    use_systemd=1
fi

# The pid of the directly started agent, when it runs.
running_pid() {
    local pid
    [ -s "$pid_file" ] || return 1
    pid="$(cat "$pid_file")"
    case "$pid" in ''|*[!0-9]*) return 1 ;; esac
    [ -r "/proc/$pid/cmdline" ] || return 1
    # A zombie or a reused pid is not our agent.
    grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$agent --config $config" || return 1
    echo "$pid"
}

stop_direct() {
    local pid
    pid="$(running_pid)" || { rm -f "$pid_file"; return 0; }
    note "stopping the agent (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        running_pid >/dev/null || break
        sleep 0.1
    done
    if running_pid >/dev/null; then
        note "it did not stop within 30 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
}

if [ "$uninstall" = 1 ]; then
    say "stopping the node-agent"
    if [ "$use_systemd" = 1 ]; then
        systemctl disable --now gpuplane-node-agent.service 2>/dev/null || note "the unit was not enabled"
    fi
    stop_direct
    say "removing what was installed"
    for file in "$agent" "$unit" "$config" "$installed_token" "$pid_file" "$log_file"; do
        if [ -e "$file" ]; then rm -f "$file"; note "removed $file"; fi
    done
    rmdir "$etc_dir" "$state_dir" "$log_dir" 2>/dev/null || true
    if [ "$use_systemd" = 1 ]; then systemctl daemon-reload; fi
    say "uninstalled; the containers the agent ran are left running, and the Node stays in the API"
    note "until an admin deletes it (DELETE /v1/nodes/NAME)"
    exit 0
fi

# --- Flags -------------------------------------------------------------------------------------
[ -n "$api_server" ] || usage_error "--api-server is required (e.g. --api-server https://gpuplane-api.internal:8080)"
# One URL or several (comma-separated, or --api-server repeated); each is checked below.
api_servers=()
IFS=',' read -r -a given_servers <<<"$api_server"
for url in "${given_servers[@]}"; do
    url="${url#"${url%%[![:space:]]*}"}"
    url="${url%"${url##*[![:space:]]}"}"
    [ -n "$url" ] || continue
    case "$url" in
        https://*) [ -n "$ca_file" ] || note "no --ca-file: the certificate of $url must be signed by a CA the system trusts" ;;
        http://127.*|http://localhost*|http://\[::1\]*) ;;
        http://*) note "warning: --api-server $url is plain HTTP: the node token crosses the network in clear text" ;;
        *) usage_error "--api-server must be http:// or https:// URLs (comma-separated for several), not '$url'" ;;
    esac
    if [ -n "$ca_file" ]; then
        case "$url" in https://*) ;; *) usage_error "--ca-file is given but --api-server $url is not an https:// URL" ;; esac
    fi
    api_servers+=("${url%/}")
done
[ ${#api_servers[@]} -gt 0 ] || usage_error "--api-server is required (e.g. --api-server https://gpuplane-api.internal:8080)"
# The first is the gateway URL and the one asked for the node's Ready; the agent gets them all.
api_server="${api_servers[0]}"
api_server_list="$(IFS=,; echo "${api_servers[*]}")"
if [ -n "$ca_file" ]; then
    [ -r "$ca_file" ] || fail "cannot read --ca-file $ca_file"
fi
case "$gpu_mode" in dedicated|large|shared) ;; *) usage_error "--gpu-mode must be dedicated, large or shared, not '$gpu_mode'" ;; esac
case "$wait_timeout" in ''|*[!0-9]*) usage_error "--wait-timeout must be a whole number of seconds, not '$wait_timeout'" ;; esac
[ -n "$node_name" ] || node_name="$(hostname)"
case "$node_name" in
    *[!a-z0-9.-]*|-*|*-) usage_error "--node-name must be lower-case letters, digits, '-' and '.' ('$node_name' is not); pass --node-name" ;;
esac
for pair in ${extra_keys[@]+"${extra_keys[@]}"}; do
    case "$pair" in
        *=*) ;;
        *) usage_error "--set takes KEY=VALUE, not '$pair'" ;;
    esac
done
[ -x "$here/bin/gpuplane-node-agent" ] || fail "$here/bin/gpuplane-node-agent is missing: run me from the unpacked release tarball"
[ -r "$here/systemd/gpuplane-node-agent.service" ] || fail "$here/systemd/gpuplane-node-agent.service is missing: run me from the unpacked release tarball"
command -v curl >/dev/null || fail "curl is missing: apt-get install curl"

token=""
if [ "$token_stdin" = 1 ]; then
    [ -z "$token_file" ] || usage_error "give --token-file or --token-stdin, not both"
    IFS= read -r token || true
    [ -n "$token" ] || usage_error "--token-stdin: standard input held no token"
elif [ -n "$token_file" ]; then
    [ -r "$token_file" ] || fail "cannot read --token-file $token_file"
    token="$(head -n 1 "$token_file" | tr -d '[:space:]')"
    [ -n "$token" ] || fail "--token-file $token_file is empty"
elif [ -s "$installed_token" ]; then
    token="$(tr -d '[:space:]' <"$installed_token")"
else
    usage_error "a node token is required: --token-file FILE or --token-stdin (an admin makes one: POST /v1/tokens {\"role\": \"node\", \"node\": \"$node_name\"})"
fi

changed=0
# place SOURCE DEST MODE: installs SOURCE at DEST unless it is there already, same bytes and mode.
place() {
    local source="$1" dest="$2" mode="$3"
    if [ -e "$dest" ] && cmp -s "$source" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
        note "unchanged: $dest"
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    install -m "$mode" "$source" "$dest.new"
    mv -f "$dest.new" "$dest"
    note "installed: $dest"
    changed=1
}
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# --- 1. Host checks (before anything is written: a failed check leaves the host as it was) ---
say "checking NVML ($nvml_library)"
gpu_count=""
case "$nvml_library" in
    */*) [ -r "$nvml_library" ] || fail "--nvml-library $nvml_library does not exist: install the NVIDIA driver or fix --nvml-library" ;;
    *) ldconfig -p | grep -qF "$nvml_library " || fail "$nvml_library is not installed: install the NVIDIA driver (apt-get install nvidia-driver-550-server, or NVIDIA's cuda-drivers package) or point --nvml-library at NVML" ;;
esac
if command -v python3 >/dev/null; then
    # dlopen it and make the calls the agent starts with.
    if ! gpu_count="$(python3 - "$nvml_library" <<'PY'
import ctypes, sys
try:
    nvml = ctypes.CDLL(sys.argv[1])
except OSError as error:
    sys.exit("cannot load %s: %s" % (sys.argv[1], error))
code = nvml.nvmlInit_v2()
if code != 0:
    sys.exit("nvmlInit_v2 failed with NVML error %d (is the NVIDIA driver loaded? nvidia-smi says)" % code)
count = ctypes.c_uint(0)
code = nvml.nvmlDeviceGetCount_v2(ctypes.byref(count))
if code != 0:
    sys.exit("nvmlDeviceGetCount_v2 failed with NVML error %d" % code)
nvml.nvmlShutdown()
print(count.value)
PY
)"; then
        fail "NVML is not usable (see above): install or repair the NVIDIA driver, or fix --nvml-library"
    fi
    note "NVML loads and sees $gpu_count GPU(s)"
else
    note "NVML is installed (python3 is missing, so it was not loaded to count the GPUs)"
fi

say "checking the container engine at $engine_socket"
[ -S "$engine_socket" ] || fail "no socket at --engine-socket $engine_socket: apt-get install podman && systemctl enable --now podman.socket, or pass --engine-socket /run/docker.sock for docker"
ping="$(curl -sS --max-time 10 --unix-socket "$engine_socket" http://d/_ping 2>&1)" || true
[ "$ping" = OK ] || fail "the engine at --engine-socket $engine_socket does not answer /_ping ($ping): systemctl restart podman.socket (or docker)"
note "the engine answers"

if [ "$gpu_count" = 0 ]; then
    say "checking CDI specs: skipped, NVML sees no GPUs (the node registers as a CPU node)"
else
    [ "${#cdi_dirs[@]}" -gt 0 ] || cdi_dirs=(/etc/cdi /var/run/cdi)
    say "checking CDI specs for $cdi_kind in ${cdi_dirs[*]}"
    find_spec() {
        local dir file
        for dir in "${cdi_dirs[@]}"; do
            [ -d "$dir" ] || continue
            for file in "$dir"/*.yaml "$dir"/*.json; do
                [ -f "$file" ] || continue
                if grep -qE "^kind:[[:space:]]*[\"']?${cdi_kind//./\\.}[\"']?[[:space:]]*\$|\"kind\":[[:space:]]*\"${cdi_kind//./\\.}\"" "$file"; then
                    echo "$file"
                    return 0
                fi
            done
        done
        return 1
    }
    if spec="$(find_spec)"; then
        note "found $spec"
    elif command -v nvidia-ctk >/dev/null; then
        note "none found: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
        mkdir -p /etc/cdi
        nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml || fail "nvidia-ctk cdi generate failed (see above)"
        cdi_dirs+=(/etc/cdi)
        spec="$(find_spec)" || fail "nvidia-ctk made /etc/cdi/nvidia.yaml but it holds no kind $cdi_kind: fix --cdi-gpu-kind"
        note "made $spec"
    else
        fail "no CDI spec for $cdi_kind and no nvidia-ctk to make one. Install the NVIDIA container toolkit
  (https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html:
   add NVIDIA's apt repository, then apt-get install nvidia-container-toolkit), then rerun me;
  or pass --cdi-spec-dir / --cdi-gpu-kind where your specs are"
    fi
fi

curl_tls=()
if [ -n "$ca_file" ]; then curl_tls=(--cacert "$ca_file"); fi
answer() {
    curl -sS --max-time 10 ${curl_tls[@]+"${curl_tls[@]}"} -H "Authorization: Bearer $token" -o "$scratch/node.json" -w '%{http_code}' "$node_url"
}
for url in "${api_servers[@]}"; do
    say "checking the api-server at $url"
    health="$(curl -sS --max-time 10 ${curl_tls[@]+"${curl_tls[@]}"} -o /dev/null -w '%{http_code}' "$url/healthz" 2>&1)" ||
        fail "cannot reach --api-server $url ($health): check the URL, the network, and that --ca-file signed its certificate"
    [ "$health" = 200 ] || fail "$url/healthz answered $health: is --api-server $url a gpuplane api-server?"
    # The node token may read its own Node (404 before the agent first registers it).
    node_url="$url/v1/nodes/$node_name"
    code="$(answer 2>&1)" || fail "cannot read $node_url ($code)"
    case "$code" in
        200|404) note "the api-server answers and accepts the node token" ;;
        401) fail "the api-server $url refuses the node token: give a valid one with --token-file or --token-stdin" ;;
        403) fail "the node token is for another node ($(cat "$scratch/node.json")): fix --node-name or --token-file" ;;
        *) fail "GET $node_url answered $code: $(cat "$scratch/node.json")" ;;
    esac
done
node_url="$api_server/v1/nodes/$node_name"

# --- 2. Binary and unit ---
say "installing the node-agent binary and its systemd unit"
place "$here/bin/gpuplane-node-agent" "$agent" 0755
sed -e "s|/usr/local/bin/gpuplane-node-agent|$agent|g" -e "s|/etc/gpuplane|$etc_dir|g" \
    "$here/systemd/gpuplane-node-agent.service" >"$scratch/unit"
place "$scratch/unit" "$unit" 0644
unit_changed=$changed

# --- 3. Configuration and token ---
say "writing $config and the node token"
{
    echo "# Written by install-node.sh: rerun it (with changed flags) rather than editing this file."
    echo "api-server = $api_server_list"
    echo "node-token-file = $installed_token"
    if [ -n "$ca_file" ]; then echo "api-server-ca-file = $etc_dir/ca.pem"; fi
    echo "node-name = $node_name"
    echo "gpu-mode = $gpu_mode"
    echo "engine-socket = $engine_socket"
    echo "nvml-library = $nvml_library"
    echo "cdi-gpu-kind = $cdi_kind"
    if [ -n "$address" ]; then echo "address = $address"; fi
    echo "gateway-url = $api_server"
    for pair in ${extra_keys[@]+"${extra_keys[@]}"}; do echo "${pair%%=*} = ${pair#*=}"; done
} >"$scratch/config"
(umask 077 && printf '%s\n' "$token" >"$scratch/token")
place "$scratch/config" "$config" 0644
place "$scratch/token" "$installed_token" 0600
if [ -n "$ca_file" ]; then place "$ca_file" "$etc_dir/ca.pem" 0644; fi

# --- 4. Start ---
if [ "$use_systemd" = 1 ]; then
    say "enabling and starting gpuplane-node-agent.service"
    if [ "$unit_changed" = 1 ]; then systemctl daemon-reload; fi
    systemctl enable gpuplane-node-agent.service
    if [ "$changed" = 1 ]; then
        systemctl restart gpuplane-node-agent.service
    else
        systemctl start gpuplane-node-agent.service
    fi
    note "logs: journalctl -u gpuplane-node-agent"
else
    if [ -n "$prefix" ]; then
        say "starting the node-agent directly (installed under --prefix $prefix, which systemd does not run)"
    else
        say "starting the node-agent directly (systemd is not PID 1 here, e.g. a container)"
    fi
    note "it will NOT restart on its own if it exits, nor start at boot: rerun this script to start it again"
    mkdir -p "$state_dir" "$log_dir"
    if pid="$(running_pid)" && [ "$changed" = 0 ]; then
        note "already running (pid $pid), nothing changed"
    else
        stop_direct
        # Its own session, so that it outlives this script and the terminal.
        setsid "$agent" --config "$config" --log-destination stderr </dev/null >>"$log_file" 2>&1 &
        echo "$!" >"$pid_file"
        sleep 0.2
        pid="$(running_pid)" || fail "the agent exited at once: $(tail -n 20 "$log_file")"
        note "started (pid $pid, pid file $pid_file, log $log_file)"
    fi
fi

# --- 5. Ready ---
[ "$wait_timeout" -gt 0 ] || { say "not waiting for the node to be Ready (--wait-timeout 0)"; exit 0; }
say "waiting up to ${wait_timeout}s for node $node_name to be Ready"
conditions() {
    if command -v python3 >/dev/null; then
        python3 -c '
import json, sys
node = json.load(open(sys.argv[1]))
for c in node.get("status", {}).get("conditions", []):
    print("%s=%s %s %s" % (c.get("type"), str(c.get("status")).lower(), c.get("reason") or "", c.get("message") or ""))
' "$scratch/node.json" 2>/dev/null
    else
        grep -o '"conditions":\[[^]]*\]' "$scratch/node.json"
    fi
}
deadline=$((SECONDS + wait_timeout))
last=""
while :; do
    code="$(answer 2>/dev/null)" || code=000
    if [ "$code" = 200 ]; then
        now="$(conditions)"
        if [ "$now" != "$last" ]; then
            while IFS= read -r line; do note "$line"; done <<<"$now"
            last="$now"
        fi
        if grep -qE '^Ready=true|"type":"Ready","status":true' <<<"$now"; then break; fi
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        if [ "$use_systemd" = 1 ]; then
            fail "node $node_name is not Ready after ${wait_timeout}s (last answer $code): journalctl -u gpuplane-node-agent says why"
        fi
        fail "node $node_name is not Ready after ${wait_timeout}s (last answer $code); the agent's log ($log_file) ends:
$(tail -n 20 "$log_file" 2>/dev/null)"
    fi
    sleep 1
done
say "node $node_name is Ready"
