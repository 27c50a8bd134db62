//! The CLI's edges without a running fleet: argument garbage, malformed command JSON, a bad
//! state dir, an unreachable server, and `bus init|apply|check` against a real nats-server
//! started from the config `bus init` wrote.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_fleetctl");

fn fleetctl(state: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--state")
        .arg(state)
        .args(args)
        .env_remove("FLEETBUS_NATS_URL")
        .env_remove("FLEETBUS_CREDS")
        .output()
        .expect("run fleetctl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn argument_garbage_exits_2_with_clap_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["host", "add", "web-1"],
        &["host", "add", "Web 1", "--address", "a", "--user", "u"],
        &[
            "host",
            "add",
            "web-1",
            "--address",
            "a",
            "--user",
            "u",
            "--port",
            "70000",
        ],
        &[
            "host",
            "add",
            "web-1",
            "--address",
            "a",
            "--user",
            "u",
            "--key-policy",
            "yolo",
        ],
        &[
            "host",
            "add-service",
            "web-1",
            "nginx",
            "--manager",
            "upstart",
            "--unit",
            "x",
        ],
        &[
            "host",
            "add-service",
            "web-1",
            "nginx",
            "--manager",
            "runit",
            "--unit",
            "x",
            "--action",
            "explode",
        ],
        &["agent", "add", "web-1"],
        &["agent", "block"],
        &["tail", "--from-seq", "x"],
        &["tail", "--from-seq", "1", "--since", "2026-01-01T00:00:00Z"],
        &["tail", "--since", "yesterday"],
        &["--timeout", "0", "host", "ls"],
        &["log", "export", "--from", "-3"],
    ];
    for args in cases {
        let o = fleetctl(dir.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty(), "{args:?}: no message");
        assert!(
            stdout(&o).is_empty(),
            "{args:?}: usage errors print nothing on stdout"
        );
    }
    // Our own usage checks exit 2 too.
    let o = fleetctl(dir.path(), &["tail", "--subject", "fleet.cmd.>"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("fleet.evt."), "{}", stderr(&o));
    let o = fleetctl(dir.path(), &["query", "Not-A-Model"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn send_of_malformed_json_is_a_clear_error_before_any_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("{\"area\": \"host\",", "EOF while parsing"),
        (
            r#"{"area": "host", "body": {"type": "remove", "data": {"host": "web.1"}}}"#,
            "body.data.host",
        ),
        (
            r#"{"area": "weather", "body": {}}"#,
            "unknown variant `weather`",
        ),
        (r#"[1, 2, 3]"#, "expected"),
    ];
    for (text, needle) in cases {
        let file = dir.path().join("cmd.json");
        std::fs::write(&file, text).expect("write");
        // The state dir has no seeds: if fleetctl tried to connect first, the error would be
        // about the seed, not the JSON.
        let o = fleetctl(dir.path(), &["send", file.to_str().unwrap_or_default()]);
        assert_eq!(o.status.code(), Some(1), "{text}");
        let err = stderr(&o);
        assert!(
            err.contains(needle) && err.contains("cmd.json"),
            "{needle}: {err}"
        );
    }
    // The same through standard input.
    let mut child = Command::new(BIN)
        .args([
            "--state",
            dir.path().to_str().unwrap_or_default(),
            "send",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(b"not json at all").expect("write stdin");
    }
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("standard input"), "{}", stderr(&o));
    // A missing file names the file.
    let o = fleetctl(dir.path(), &["send", "/nonexistent/cmd.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/cmd.json"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_state_dir_and_unreachable_server_fail_fast_and_clearly() {
    let o = fleetctl(Path::new("/nonexistent/state"), &["host", "ls"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("/nonexistent/state/nats/admin.nk") && err.contains("bus init"),
        "{err}"
    );

    // Seeds exist but nothing listens: fails after --timeout, naming the URL.
    let dir = tempfile::tempdir().expect("tempdir");
    let o = fleetctl(
        dir.path(),
        &["bus", "init", "--port", "4999", "--http-port", "0"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let port = fleetbus_testkit::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let o = fleetctl(
        dir.path(),
        &["--nats-url", &url, "--timeout", "1", "agent", "ls"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&url), "{}", stderr(&o));

    // A world-readable seed is refused with the fix.
    use std::os::unix::fs::PermissionsExt;
    let seed = dir.path().join("nats/admin.nk");
    std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let o = fleetctl(dir.path(), &["--nats-url", &url, "host", "ls"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));

    // Offline log verbs without a log file.
    let o = fleetctl(dir.path(), &["log", "verify"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("ingest/log.redb"), "{}", stderr(&o));
}

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn bus_init_writes_a_config_nats_server_runs_and_apply_check_converge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = fleetbus_testkit::free_port();
    let port_s = port.to_string();
    let o = fleetctl(
        dir.path(),
        &[
            "--json",
            "bus",
            "init",
            "--port",
            &port_s,
            "--http-port",
            "0",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let init: serde_json::Value = serde_json::from_slice(&o.stdout).expect("init json");
    assert_eq!(init["changed"], true);
    let conf = dir.path().join("nats/nats.conf");
    let text = std::fs::read_to_string(&conf).expect("conf");
    for seed in std::fs::read_dir(dir.path().join("nats"))
        .expect("dir")
        .flatten()
    {
        if seed.path().extension().is_some_and(|e| e == "nk") {
            let s = std::fs::read_to_string(seed.path()).unwrap_or_default();
            assert!(!text.contains(s.trim()), "seed leaked into nats.conf");
        }
    }
    // Idempotent: same seeds, same config.
    let o = fleetctl(
        dir.path(),
        &[
            "--json",
            "bus",
            "init",
            "--port",
            &port_s,
            "--http-port",
            "0",
        ],
    );
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).expect("init json");
    assert_eq!(again["changed"], false);

    let log = std::fs::File::create(dir.path().join("nats.log")).expect("log");
    let child = Command::new(fleetbus_testkit::nats::nats_server_bin())
        .arg("-c")
        .arg(&conf)
        .stdout(log.try_clone().expect("clone"))
        .stderr(log)
        .spawn()
        .expect("start nats-server");
    let _server = Server(child);
    let up = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(
        up,
        "nats-server did not start: {}",
        std::fs::read_to_string(dir.path().join("nats.log")).unwrap_or_default()
    );
    let url = format!("nats://127.0.0.1:{port}");

    let o = fleetctl(dir.path(), &["--nats-url", &url, "bus", "check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("stream EVENTS: MISSING"),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("bus apply"), "{}", stderr(&o));

    let o = fleetctl(dir.path(), &["--nats-url", &url, "bus", "apply"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("stream EVENTS: created"),
        "{}",
        stdout(&o)
    );

    let o = fleetctl(dir.path(), &["--nats-url", &url, "--json", "bus", "check"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("check json");
    let items = report["items"].as_array().cloned().unwrap_or_default();
    assert!(items.len() >= 4);
    assert!(
        items.iter().all(|i| i["outcome"] == "unchanged"),
        "{report}"
    );

    let o = fleetctl(dir.path(), &["--nats-url", &url, "bus", "apply"]);
    assert!(o.status.success());
    assert!(
        !stdout(&o).contains("created") && !stdout(&o).contains("updated"),
        "{}",
        stdout(&o)
    );
}
