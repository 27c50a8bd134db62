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

# A cargo subcommand from crates.io at an exact version (built once into ~/.cargo/bin).
ensure_cargo_tool() {
    local name="$1" version="$2"
    if ! "$name" --version 2>/dev/null | grep -qF "$version"; then
        say "installing $name $version from crates.io"
        cargo install --locked --quiet "$name" --version "$version"
    fi
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

# The start time of a live process (clock ticks since boot, field 22 of /proc/PID/stat);
# fails for a pid that does not exist or is a zombie.
proc_start() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    # Fields after the command name, which may itself hold spaces: "STATE PPID ... STARTTIME ...".
    # shellcheck disable=SC2086
    set -- ${stat##*) }
    [ "$1" != Z ] || return 1
    echo "${20}"
}

# True when the pid file names a process that is running and is the one that was started: a
# pid file holds "PID STARTTIME", so a dead pid, or one the kernel has since given to another
# process, does not count.
pidfile_alive() {
    local pid start now
    read -r pid start < "$1" 2>/dev/null || return 1
    [ -n "$pid" ] && [ -n "${start:-}" ] || return 1
    now="$(proc_start "$pid")" || return 1
    [ "$now" = "$start" ]
}

# Starts a background process, recording its pid and start time; logs go to
# $FB_STATE/logs/NAME.log. Safe to re-run at any moment: a running copy is left alone, a stale
# pid file (the process died, or the pid now belongs to something else) is replaced.
start_bg() {
    local name="$1"; shift
    mkdir -p "$FB_STATE/pids" "$FB_STATE/logs"
    local pidfile="$FB_STATE/pids/$name.pid"
    if [ -f "$pidfile" ]; then
        if pidfile_alive "$pidfile"; then
            say "$name already running (pid $(cut -d' ' -f1 "$pidfile"))"
            return 0
        fi
        rm -f "$pidfile"
    fi
    nohup "$@" >>"$FB_STATE/logs/$name.log" 2>&1 &
    local pid=$!
    echo "$pid $(proc_start "$pid" || echo gone)" > "$pidfile"
    say "started $name (pid $pid)"
}

# Stops what start_bg started, by pid: TERM, then KILL after a grace period. A pid that is no
# longer the process start_bg started is never signalled.
stop_bg() {
    local pidfile="$1" name pid
    name="$(basename "$pidfile" .pid)"
    if pidfile_alive "$pidfile"; then
        pid="$(cut -d' ' -f1 "$pidfile")"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do pidfile_alive "$pidfile" || break; sleep 0.1; done
        pidfile_alive "$pidfile" && kill -KILL "$pid" 2>/dev/null
        say "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
}

# Waits until NAME's /healthz at ADDR answers 200 (it reports its bus, readers and writer), or
# fails at once if the process died, showing the end of its log.
wait_healthy() {
    local name="$1" addr="$2" pidfile="$FB_STATE/pids/$1.pid"
    for _ in $(seq 1 300); do
        if ! pidfile_alive "$pidfile"; then
            tail -n 20 "$FB_STATE/logs/$name.log" >&2 || true
            die "$name exited (log: $FB_STATE/logs/$name.log)"
        fi
        python3 - "http://$addr/healthz" <<'PY' && return 0
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200 else 1)
except Exception:
    sys.exit(1)
PY
        sleep 0.2
    done
    die "$name did not become healthy on http://$addr/healthz (see $FB_STATE/logs/$name.log)"
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
