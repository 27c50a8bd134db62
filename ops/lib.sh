# Shared helpers for the ops scripts. Sourced, not run.
# shellcheck shell=bash

FB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FB_STATE="${FLEETBUS_STATE:-$FB_ROOT/state}"
export FLEETBUS_STATE="$FB_STATE"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs the Debian packages that are missing (one apt-get update per run, only if needed).
apt_ensure() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The Rust toolchain must already be there (rustup is not a Debian package we can rely on).
ensure_cargo() {
    command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
}

# The packages every fleetbus machine needs: the bus, the SSH targets, a service manager for
# the demo fleet, sudo for scoped privileges.
ensure_base_packages() {
    apt_ensure nats-server openssh-server openssh-client sudo runit ca-certificates python3
    # sshd wants its privilege-separation directory; there is no systemd to create it here.
    mkdir -p /run/sshd && chmod 0755 /run/sshd
}

# A Python venv with the packages the tests' real peers need (SMTP server, NATS tap client,
# API fuzzer). Prints the interpreter path.
ensure_test_venv() {
    local venv="${FLEETBUS_TEST_VENV:-$FB_ROOT/target/test-venv}"
    local stamp="$venv/.fleetbus-reqs"
    local reqs="nats-py nkeys msgpack aiosmtpd schemathesis"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" >&2 || { apt_ensure python3-venv && python3 -m venv "$venv" >&2; }
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$reqs" ]; then
        say "installing Python test packages into $venv: $reqs"
        "$venv/bin/pip" install -q --disable-pip-version-check $reqs >&2
        echo "$reqs" > "$stamp"
    fi
    echo "$venv/bin/python"
}

# Starts a background process, recording its pid; logs go to $FB_STATE/logs/NAME.log.
start_bg() {
    local name="$1"; shift
    mkdir -p "$FB_STATE/pids" "$FB_STATE/logs"
    local pidfile="$FB_STATE/pids/$name.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        say "$name already running (pid $(cat "$pidfile"))"
        return 0
    fi
    nohup "$@" >>"$FB_STATE/logs/$name.log" 2>&1 &
    echo $! > "$pidfile"
    say "started $name (pid $!)"
}

# Stops what start_bg started, by pid: TERM, then KILL after a grace period.
stop_bg() {
    local pidfile="$1" name pid
    name="$(basename "$pidfile" .pid)"
    pid="$(cat "$pidfile" 2>/dev/null)" || return 0
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        say "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
}

# Waits until a TCP port accepts connections.
wait_port() {
    local host="$1" port="$2" what="$3"
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    die "$what did not start listening on $host:$port (see $FB_STATE/logs/)"
}
