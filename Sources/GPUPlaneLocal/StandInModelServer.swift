import Foundation

/// gpuplane's stand-in model server: NOT vLLM, it serves no model. A busybox shell script that
/// speaks just enough of the OpenAI protocol for tests to watch a model server start on its
/// GPU, report ready, and answer through the inference gateway. Every reply says it comes from
/// the stand-in.
///
/// It takes vLLM-style arguments (`--model ID`, `--served-model-name NAME`, `--port N`, others
/// ignored) and these of its own:
/// - `--hold-until PATH`: answer nothing until PATH exists (a model still loading);
/// - `--stand-in-delay SECONDS`: wait that long before answering each completion;
/// - `--stand-in-hold-stream PATH`: in a streamed answer, send the first chunk, then wait until
///   PATH exists before the rest (so a test can prove a proxy streams rather than buffers).
///
/// It answers:
/// - `GET /v1/models`: `{"object":"list","data":[{"id":NAME,…}]}`;
/// - `POST /v1/chat/completions`, `POST /v1/completions`: vLLM's 404 error when the body's
///   `model` is not NAME; else a completion whose content names NAME and the GPUs the
///   container sees, or with `"stream":true` three server-sent chunks and `data: [DONE]`;
/// - `GET /stand-in/stats`: `{"requests":N,"maxInFlight":M}`, completions answered and the
///   most that were in flight at once.
///
/// Each connection is handled by its own process (`nc -ll -e`), so requests run concurrently.
public enum StandInModelServer {
    /// The script; it needs `/bin/busybox`.
    public static let script = #"""
        #!/bin/busybox sh
        # gpuplane's stand-in model server: NOT vLLM, it serves no model (see
        # Sources/GPUPlaneTestSupport/StandInModelServer.swift).
        if [ -n "$STANDIN_SERVE_ONE" ]; then
            state=$STANDIN_STATE
            cr=$(printf '\r')
            respond() {
                printf 'HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "$1" "${#2}" "$2"
            }
            read -r method target version
            len=0
            while IFS= read -r line; do
                line=${line%"$cr"}
                [ -z "$line" ] && break
                case "$line" in
                    [Cc]ontent-[Ll]ength:*) len=${line#*:}; len=$(echo $len) ;;
                esac
            done
            body=
            if [ "$len" -gt 0 ] 2>/dev/null; then body=$(busybox head -c "$len"); fi
            case "$method $target" in
                "GET /v1/models")
                    respond "200 OK" "{\"object\":\"list\",\"data\":[{\"id\":\"$STANDIN_SERVED\",\"object\":\"model\",\"owned_by\":\"gpuplane-stand-in\"}]}"
                    ;;
                "GET /stand-in/stats")
                    respond "200 OK" "{\"requests\":$(cat "$state/requests"),\"maxInFlight\":$(cat "$state/max")}"
                    ;;
                "POST /v1/chat/completions" | "POST /v1/completions")
                    asked=$(printf '%s' "$body" | busybox sed -n 's/.*"model"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' | busybox sed 's|\\/|/|g')
                    if [ "$asked" != "$STANDIN_SERVED" ]; then
                        respond "404 Not Found" "{\"object\":\"error\",\"message\":\"The model \`$asked\` does not exist.\",\"type\":\"NotFoundError\",\"code\":404}"
                        exit 0
                    fi
                    until busybox mkdir "$state/lock" 2>/dev/null; do busybox usleep 1000; done
                    busybox touch "$state/inflight/$$"
                    now=$(busybox ls "$state/inflight" | busybox wc -l)
                    [ "$now" -gt "$(cat "$state/max")" ] && echo "$now" > "$state/max"
                    echo $(( $(cat "$state/requests") + 1 )) > "$state/requests"
                    busybox rmdir "$state/lock"
                    [ "$STANDIN_DELAY" != 0 ] && busybox sleep "$STANDIN_DELAY"
                    text="stand-in reply (not a model) from $STANDIN_SERVED on gpus $STANDIN_GPUS"
                    case "$body" in
                        *'"stream":true'* | *'"stream": true'*)
                            printf 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n'
                            for part in 1 2 3; do
                                printf 'data: {"object":"chat.completion.chunk","model":"%s","choices":[{"index":0,"delta":{"content":"part %s of %s"}}]}\n\n' "$STANDIN_SERVED" "$part" "$text"
                                if [ "$part" = 1 ] && [ -n "$STANDIN_HOLD_STREAM" ]; then
                                    while [ ! -e "$STANDIN_HOLD_STREAM" ]; do busybox usleep 50000; done
                                fi
                            done
                            printf 'data: [DONE]\n\n'
                            ;;
                        *)
                            respond "200 OK" "{\"id\":\"stand-in-$$\",\"object\":\"chat.completion\",\"model\":\"$STANDIN_SERVED\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"$text\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":0,\"total_tokens\":0}}"
                            ;;
                    esac
                    busybox rm -f "$state/inflight/$$"
                    ;;
                *)
                    respond "404 Not Found" "{\"object\":\"error\",\"message\":\"the stand-in has no route $method $target\",\"code\":404}"
                    ;;
            esac
            exit 0
        fi
        model=stand-in
        served=
        port=8000
        hold=
        delay=0
        holdStream=
        while [ $# -gt 0 ]; do
            case "$1" in
                --model) model=$2; shift ;;
                --served-model-name) served=$2; shift ;;
                --port) port=$2; shift ;;
                --hold-until) hold=$2; shift ;;
                --stand-in-delay) delay=$2; shift ;;
                --stand-in-hold-stream) holdStream=$2; shift ;;
            esac
            shift
        done
        [ -z "$served" ] && served=$model
        gpus=$(env | busybox sed -n 's/^GPUPLANE_FAKE_GPU_\([0-9]*\)_UUID=.*/\1/p' | busybox sort -n | busybox tr '\n' ',')
        echo "gpuplane stand-in model server (not vLLM): model=$model served=$served port=$port gpus=$gpus slug=${GPUPLANE_MODEL_SLUG:-}"
        if [ -n "$hold" ]; then
            echo "holding until $hold exists"
            while [ ! -e "$hold" ]; do busybox sleep 0.2; done
        fi
        state=${TMPDIR:-/tmp}/gpuplane-stand-in-$port-$$
        busybox mkdir -p "$state/inflight"
        echo 0 > "$state/max"
        echo 0 > "$state/requests"
        export STANDIN_SERVE_ONE=1 STANDIN_SERVED="$served" STANDIN_GPUS="$gpus" STANDIN_DELAY="$delay"
        export STANDIN_STATE="$state" STANDIN_HOLD_STREAM="$holdStream"
        exec busybox nc -ll -p "$port" -e "$0"
        """#

    /// Writes the script into `directory` and starts it on this machine (not in a container),
    /// listening on `port`; stop it with ``ChildProcess/kill9()``.
    public static func start(
        in directory: URL, port: Int, arguments: [String]
    ) throws -> ChildProcess {
        let path = directory.appendingPathComponent("gpuplane-stand-in-model-server")
        if !FileManager.default.fileExists(atPath: path.path) {
            try script.write(to: path, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: path.path)
        }
        return try ChildProcess(
            executable: path.path, arguments: ["--port", String(port)] + arguments,
            environment: ["TMPDIR": directory.path],
            logFile: directory.appendingPathComponent("stand-in-\(port).log"))
    }
}
