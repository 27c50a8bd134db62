//! fleetctl and the agent end to end: a real nats-server, the real `fleetbus-ingest` binary and
//! the real `fleetbus-agent` binary (build them first: `cargo build -p fleetbus-ingest -p
//! fleetbus-agent`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetbus_testkit::NatsServer;

mod common;
use common::{healthy, stderr, stdout, Fleetctl};

struct Fleet {
    nats: NatsServer,
    state: tempfile::TempDir,
    ingest_conf: PathBuf,
    http: SocketAddr,
    ingest: Option<Child>,
}

fn term(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Fleet {
    fn start() -> Fleet {
        let nats = NatsServer::start();
        let state = tempfile::tempdir().expect("tempdir");
        let http: SocketAddr = format!("127.0.0.1:{}", fleetbus_testkit::free_port())
            .parse()
            .expect("addr");
        let ingest_conf = state.path().join("ingest.toml");
        let conf = format!(
            "version = 1\nstate_dir = \"{}\"\nhttp_addr = \"{http}\"\n[nats]\nurl = \"{}\"\nuser = \"ingest\"\nnkey_seed_file = \"{}\"\n",
            state.path().display(),
            nats.url(),
            nats.credentials()
                .seed_path(fleetbus_bus_config::Role::Ingest)
                .display()
        );
        std::fs::write(&ingest_conf, conf).expect("write ingest config");
        let mut fleet = Fleet {
            nats,
            state,
            ingest_conf,
            http,
            ingest: None,
        };
        let o = fleet.ctl(&["bus", "apply"]);
        assert!(o.status.success(), "bus apply: {}", stderr(&o));
        assert!(
            stdout(&o).contains("stream EVENTS: created"),
            "{}",
            stdout(&o)
        );
        fleet.start_ingest();
        fleet
    }

    fn start_ingest(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.path().join("ingest.log"))
            .expect("ingest log");
        let child = Command::new(fleetbus_testkit::bin_path("fleetbus-ingest"))
            .arg("--config")
            .arg(&self.ingest_conf)
            .env_remove("FLEETBUS_STATE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .spawn()
            .expect("start ingest");
        self.ingest = Some(child);
        let addr = self.http;
        let log_path = self.state.path().join("ingest.log");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(addr) {
            if let Some(Ok(Some(status))) = self.ingest.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "ingest exited with {status}:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "ingest not healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_ingest(&mut self) {
        if let Some(mut c) = self.ingest.take() {
            term(&mut c);
        }
    }

    fn log_path(&self) -> PathBuf {
        self.state.path().join("ingest").join("log.redb")
    }

    /// Event ids of every stored `agent … reported` event, with how often each occurs.
    fn reported_ids(&self) -> BTreeMap<String, usize> {
        let page = self.ctl_json(&[
            "query",
            "events",
            "--json-args",
            r#"{"domain": "agent", "type_name": "reported", "limit": 1000}"#,
        ]);
        let mut ids = BTreeMap::new();
        for rec in page.as_array().cloned().unwrap_or_default() {
            if let Some(id) = rec["envelope"]["id"].as_str() {
                *ids.entry(id.to_owned()).or_insert(0) += 1;
            }
        }
        ids
    }
}

impl Fleetctl for Fleet {
    fn nats(&self) -> &NatsServer {
        &self.nats
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(mut c) = self.ingest.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn write_agent_config(dir: &Path, http: SocketAddr, key_file: &Path, interval: u64) -> PathBuf {
    let path = dir.join("agent.toml");
    let text = format!(
        "version = 1\ningest_url = \"http://{http}\"\nagent = \"web-1\"\nhost = \"web-1\"\n\
         key_file = \"{}\"\ninterval_secs = {interval}\nbuffer_dir = \"{}\"\nrequest_timeout_secs = 2\n\
         [[services]]\nname = \"nginx\"\nmanager = \"runit\"\nunit = \"{}\"\n",
        key_file.display(),
        dir.join("buffer").display(),
        dir.join("sv/nginx").display()
    );
    std::fs::write(&path, text).expect("write agent config");
    path
}

fn buffered_ids(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .filter_map(|n| {
            n.strip_suffix(".json")
                .and_then(|s| s.split_once('-'))
                .map(|(_, id)| id.to_owned())
        })
        .collect()
}

#[test]
fn registry_agent_send_query_tail_verbs_against_real_ingest() {
    let fleet = Fleet::start();

    // Hosts.
    let out = fleet.ctl_ok(&[
        "host",
        "add",
        "web-1",
        "--address",
        "127.0.0.2",
        "--port",
        "2222",
        "--user",
        "fleet",
        "--tag",
        "web",
        "--role",
        "frontend",
    ]);
    assert!(out.contains("fleet.evt.host.web-1.registered"), "{out}");
    let o = fleet.ctl(&[
        "host",
        "add",
        "web-1",
        "--address",
        "127.0.0.2",
        "--user",
        "fleet",
    ]);
    assert_eq!(o.status.code(), Some(1), "duplicate add must be rejected");
    assert!(
        stderr(&o).contains("rejected") && stderr(&o).contains("conflict"),
        "{}",
        stderr(&o)
    );
    fleet.ctl_ok(&[
        "host",
        "add-service",
        "web-1",
        "nginx",
        "--manager",
        "runit",
        "--unit",
        "/etc/sv/nginx",
        "--action",
        "status",
        "--action",
        "restart",
    ]);
    let ls = fleet.ctl_json(&["host", "ls"]);
    assert_eq!(ls["hosts"]["web-1"]["port"], 2222);
    assert_eq!(ls["hosts"]["web-1"]["tags"][0], "web");
    assert_eq!(ls["services"]["web-1:nginx"]["actions"][1], "restart");
    let human = fleet.ctl_ok(&["host", "ls"]);
    assert!(
        human.contains("web-1") && human.contains("127.0.0.2:2222") && human.contains("nginx"),
        "{human}"
    );

    // Agents: the key is shown once (or written 0600); only its hash travels.
    let key_file = fleet.state.path().join("keys/web-1.key");
    let added = fleet.ctl_json(&[
        "agent",
        "add",
        "web-1",
        "--host",
        "web-1",
        "--key-file",
        key_file.to_str().unwrap_or_default(),
    ]);
    assert!(
        added.get("key").is_none(),
        "key must not be printed with --key-file"
    );
    let key = std::fs::read_to_string(&key_file).expect("key file");
    assert_eq!(key.trim().len(), 43);
    let mode = std::fs::metadata(&key_file)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o600);
    // Its key event travels on fleet.sec.…; fleetctl still finds it committed before it returns.
    let o = fleet.ctl(&["--json", "agent", "add", "web-2", "--host", "web-1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("not in the log"), "{}", stderr(&o));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("agent add JSON");
    let key2 = shown["key"].as_str().unwrap_or_default().to_owned();
    assert_eq!(key2.len(), 43);
    let agents = fleet.ctl_json(&["agent", "ls"]);
    assert_eq!(agents["web-1"]["key_id"], added["key_id"]);
    let everything = serde_json::to_string(&agents).unwrap_or_default();
    assert!(
        !everything.contains(key.trim()) && !everything.contains(&key2),
        "keys leak in agent ls"
    );
    fleet.ctl_ok(&["agent", "block", "web-2", "--reason", "decommissioning"]);
    assert_eq!(fleet.ctl_json(&["agent", "ls"])["web-2"]["blocked"], true);
    fleet.ctl_ok(&["agent", "unblock", "web-2"]);
    fleet.ctl_ok(&["agent", "revoke", "web-2"]);

    // send: any command from JSON on stdin; rejection exits 1 with the reason.
    let send = |json: &str| {
        let mut child = fleet
            .ctl_cmd(&["send", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn send");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(json.as_bytes()).expect("stdin");
        }
        child.wait_with_output().expect("send output")
    };
    let o = send(
        r#"{"area": "host", "body": {"type": "remove_service", "data": {"host": "web-1", "name": "nginx"}}}"#,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("fleet.evt.service.web-1:nginx.removed")
            || stdout(&o).contains("removed"),
        "{}",
        stdout(&o)
    );
    let o = send(r#"{"area": "host", "body": {"type": "remove", "data": {"host": "ghost"}}}"#);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not_found") && stderr(&o).contains("ghost"),
        "{}",
        stderr(&o)
    );

    // import: added, then unchanged; a changed port is an update.
    let import = fleet.state.path().join("hosts.toml");
    let text = "[[hosts]]\nhost = \"db-1\"\naddress = \"127.0.0.3\"\nuser = \"fleet\"\n\
                [[hosts.services]]\nname = \"postgres\"\nmanager = \"runit\"\nunit = \"/etc/sv/postgres\"\n";
    std::fs::write(&import, text).expect("write import");
    let out = fleet.ctl_ok(&["host", "import", import.to_str().unwrap_or_default()]);
    assert!(
        out.contains("host db-1: added") && out.contains("service db-1:postgres: added"),
        "{out}"
    );
    let out = fleet.ctl_ok(&["host", "import", import.to_str().unwrap_or_default()]);
    assert!(
        out.contains("host db-1: unchanged") && out.contains("service db-1:postgres: unchanged"),
        "{out}"
    );
    std::fs::write(
        &import,
        text.replace("user = \"fleet\"", "user = \"fleet\"\nport = 2200"),
    )
    .expect("write");
    let out = fleet.ctl_ok(&["host", "import", import.to_str().unwrap_or_default()]);
    assert!(out.contains("host db-1: updated"), "{out}");

    // query.
    let head = fleet.ctl_json(&["query", "log_head"]);
    assert!(head["seq"].as_u64().unwrap_or(0) >= 8, "{head}");
    let host = fleet.ctl_json(&["query", "host", "--json-args", r#"{"host": "web-1"}"#]);
    assert!(host.is_object(), "{host}");
    let o = fleet.ctl(&["query", "host", "--json-args", r#"{"host": "nope"}"#]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not_found"), "{}", stderr(&o));
    let o = fleet.ctl(&["query", "bogus_model"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown model"), "{}", stderr(&o));

    // tail: replay from sequence 1 until caught up; secrets never appear on fleet.evt.
    let out = fleet.ctl_ok(&["--json", "tail", "--from-seq", "1", "--no-follow"]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(lines.len() >= 8, "{out}");
    let seqs: Vec<u64> = lines
        .iter()
        .filter_map(|l| l["stream_seq"].as_u64())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]) && seqs[0] == 1,
        "{seqs:?}"
    );
    assert!(lines
        .iter()
        .any(|l| l["subject"] == "fleet.evt.host.web-1.registered"));
    assert!(!out.contains("key_hash"), "credential material in EVENTS");
    let out = fleet.ctl_ok(&[
        "tail",
        "--subject",
        "fleet.evt.host.>",
        "--from-seq",
        "1",
        "--count",
        "1",
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("#1 ") && out.contains("fleet.evt.host.web-1.registered"),
        "{out}"
    );
    let since = fleet.ctl_ok(&["tail", "--since", "2000-01-01T00:00:00Z", "--count", "2"]);
    assert_eq!(since.lines().count(), 2, "{since}");
    // The sec stream holds the key hashes; admin may read it.
    let sec = fleet.ctl_ok(&[
        "--json",
        "tail",
        "--subject",
        "fleet.sec.>",
        "--from-seq",
        "1",
        "--no-follow",
    ]);
    assert!(sec.contains("key_issued"), "{sec}");

    // Live tail: follows new events as they happen.
    let mut live = fleet
        .ctl_cmd(&[
            "--json",
            "tail",
            "--subject",
            "fleet.evt.host.web-9.>",
            "--count",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn live tail");
    fleet.ctl_ok(&[
        "host",
        "add",
        "web-9",
        "--address",
        "127.0.0.9",
        "--user",
        "fleet",
    ]);
    // The consumer may have been created after that event: keep producing until it sees one.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut port = 3000;
    loop {
        if let Ok(Some(_)) = live.try_wait() {
            break;
        }
        assert!(Instant::now() < deadline, "live tail saw nothing");
        port += 1;
        let p = port.to_string();
        fleet.ctl_ok(&[
            "host",
            "update",
            "web-9",
            "--address",
            "127.0.0.9",
            "--user",
            "fleet",
            "--port",
            &p,
        ]);
    }
    let o = live.wait_with_output().expect("tail output");
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("tail json");
    assert!(
        line["subject"]
            .as_str()
            .unwrap_or_default()
            .starts_with("fleet.evt.host.web-9."),
        "{line}"
    );
}

#[test]
fn agent_buffers_while_ingest_is_down_and_every_report_arrives_once() {
    let mut fleet = Fleet::start();
    fleet.ctl_ok(&[
        "host",
        "add",
        "web-1",
        "--address",
        "127.0.0.2",
        "--user",
        "fleet",
    ]);
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let key_file = agent_dir.path().join("agent.key");
    fleet.ctl_ok(&[
        "agent",
        "add",
        "web-1",
        "--host",
        "web-1",
        "--key-file",
        key_file.to_str().unwrap_or_default(),
    ]);
    let conf = write_agent_config(agent_dir.path(), fleet.http, &key_file, 1);
    let agent_bin = fleetbus_testkit::bin_path("fleetbus-agent");

    // once: one report, exit 0.
    let o = Command::new(&agent_bin)
        .arg("--config")
        .arg(&conf)
        .arg("once")
        .output()
        .expect("agent once");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fleet.reported_ids().len(), 1);

    // event: one notice.
    let o = Command::new(&agent_bin)
        .arg("--config")
        .arg(&conf)
        .args([
            "event",
            "--kind",
            "deploy",
            "--severity",
            "info",
            "--message",
            "v2 rolled out",
            "--field",
            "version=2",
        ])
        .output()
        .expect("agent event");
    assert!(o.status.success(), "{}", stderr(&o));
    let raised = fleet.ctl_json(&[
        "query",
        "events",
        "--json-args",
        r#"{"type_name": "raised"}"#,
    ]);
    assert_eq!(
        raised[0]["envelope"]["event"]["body"]["data"]["message"],
        "v2 rolled out"
    );

    // run: reports every second.
    let agent_log = std::fs::File::create(agent_dir.path().join("agent.log")).expect("log");
    let mut agent = Command::new(&agent_bin)
        .arg("--config")
        .arg(&conf)
        .arg("run")
        .stdout(agent_log.try_clone().expect("clone"))
        .stderr(agent_log)
        .spawn()
        .expect("agent run");
    wait_until(
        "two reports from the running agent",
        Duration::from_secs(20),
        || fleet.reported_ids().len() >= 3,
    );

    // Ingest goes away: reports pile up in the buffer.
    let before = fleet.reported_ids().len();
    fleet.stop_ingest();
    let buffer_dir = agent_dir.path().join("buffer");
    wait_until("three buffered reports", Duration::from_secs(30), || {
        buffered_ids(&buffer_dir).len() >= 3
    });
    let waiting = buffered_ids(&buffer_dir);

    // Ingest is back: the buffer drains, in batches, with the original ids.
    fleet.start_ingest();
    wait_until("buffer drained", Duration::from_secs(30), || {
        buffered_ids(&buffer_dir).is_empty()
    });
    let after_drain = fleet.reported_ids().len();
    wait_until(
        "a fresh report after the drain",
        Duration::from_secs(20),
        || fleet.reported_ids().len() > after_drain,
    );
    term(&mut agent);

    let stored = fleet.reported_ids();
    for id in &waiting {
        assert_eq!(
            stored.get(id),
            Some(&1),
            "buffered report {id} must be stored exactly once"
        );
    }
    assert!(
        stored.values().all(|&n| n == 1),
        "no report is stored twice"
    );
    assert!(
        stored.len() >= before + waiting.len(),
        "{} < {before} + {}",
        stored.len(),
        waiting.len()
    );
    let agent_log = std::fs::read_to_string(agent_dir.path().join("agent.log")).unwrap_or_default();
    assert!(agent_log.contains("buffering"), "{agent_log}");

    // Offline log verbs on the file ingest wrote.
    fleet.stop_ingest();
    let db = fleet.log_path();
    let db = db.to_str().unwrap_or_default();
    let out = fleet.ctl_ok(&["log", "verify", "--db", db]);
    assert!(out.starts_with("ok: "), "{out}");
    let report = fleet.ctl_json(&["log", "rebuild", "--db", db]);
    assert!(report["first_difference"].is_null(), "{report}");
    assert!(report["events"].as_u64().unwrap_or(0) >= stored.len() as u64);
    let export = fleet.ctl_ok(&["log", "export", "--from", "2", "--limit", "3", "--db", db]);
    let seqs: Vec<u64> = export
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["seq"].as_u64())
        .collect();
    assert_eq!(seqs, vec![2, 3, 4]);
}
