//! `fleetctl host trust`, `fleetctl sudoers` and `fleetctl do` against real components: a real
//! nats-server, the real `fleetbus-ingest` and `fleetbus-executor` binaries and real OpenSSH
//! sshd targets (build the binaries first: `cargo build -p fleetbus-ingest -p fleetbus-executor`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetbus_bus_config::Role;
use fleetbus_testkit::sshd::{Sshd, SshdOptions};
use fleetbus_testkit::NatsServer;

mod common;
use common::{healthy, stderr, stdout, Fleetctl};

/// Polls `f` (every 50 ms, at most 15 s) until it gives a value.
fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (by its own pid) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Rig {
    nats: NatsServer,
    state: tempfile::TempDir,
    procs: Vec<Proc>,
}

impl Fleetctl for Rig {
    fn nats(&self) -> &NatsServer {
        &self.nats
    }
}

impl Rig {
    /// nats-server with fleetbus' streams (applied by `fleetctl bus apply`).
    fn start() -> Rig {
        let rig = Rig {
            nats: NatsServer::start(),
            state: tempfile::tempdir().expect("tempdir"),
            procs: Vec::new(),
        };
        let o = rig.ctl(&["bus", "apply"]);
        assert!(o.status.success(), "bus apply: {}", stderr(&o));
        rig
    }

    fn nats_section(&self, role: Role, user: &str) -> String {
        format!(
            "[nats]\nurl = \"{}\"\nuser = \"{user}\"\nnkey_seed_file = \"{}\"\n",
            self.nats.url(),
            self.nats.credentials().seed_path(role).display()
        )
    }

    fn spawn(&mut self, bin: &str, conf: PathBuf, log: &str) -> PathBuf {
        let log_path = self.state.path().join(log);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let child = Command::new(fleetbus_testkit::bin_path(bin))
            .arg("--config")
            .arg(conf)
            .env_remove("FLEETBUS_STATE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e}"));
        self.procs.push(Proc(child));
        log_path
    }

    fn start_ingest(&mut self) {
        let http: SocketAddr = format!("127.0.0.1:{}", fleetbus_testkit::free_port())
            .parse()
            .expect("addr");
        let conf = self.state.path().join("ingest.toml");
        let text = format!(
            "version = 1\nstate_dir = \"{}\"\nhttp_addr = \"{http}\"\n{}",
            self.state.path().display(),
            self.nats_section(Role::Ingest, "ingest")
        );
        std::fs::write(&conf, text).expect("write ingest config");
        let log = self.spawn("fleetbus-ingest", conf, "ingest.log");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(http) {
            assert!(
                Instant::now() < deadline,
                "ingest not healthy:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn add_host(&self, host: &str, sshd: &Sshd) {
        let port = sshd.port().to_string();
        let address = sshd.ip().to_string();
        self.ctl_ok(&[
            "host",
            "add",
            host,
            "--address",
            &address,
            "--port",
            &port,
            "--user",
            "fleet",
            "--key-policy",
            "strict",
        ]);
    }

    /// Waits until ingest's registry (what `query` reads, behind the events on the bus) holds
    /// `host` with `services` services.
    fn wait_registered(&self, host: &str, services: usize) {
        eventually(|| {
            let reg = self.ctl_json(&["query", "registry"]);
            let has_host = reg["hosts"].get(host).is_some();
            let n = reg["services"]
                .as_object()
                .map(|m| m.values().filter(|s| s["host"] == host).count())
                .unwrap_or(0);
            (has_host && n == services).then_some(())
        })
    }

    /// `host.key_pinned` events for `host`, as (algorithm, fingerprint).
    fn pinned_events(&self, host: &str) -> Vec<(String, String)> {
        let page = self.ctl_json(&[
            "query",
            "events",
            "--json-args",
            r#"{"domain": "host", "type_name": "key_pinned", "limit": 100}"#,
        ]);
        page.as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|rec| &rec["envelope"]["event"]["body"]["data"])
            .filter(|d| d["host"] == host)
            .map(|d| {
                (
                    d["algorithm"].as_str().unwrap_or_default().to_owned(),
                    d["fingerprint"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

#[test]
fn host_trust_pins_only_the_fingerprint_a_person_checked() {
    let mut rig = Rig::start();
    rig.start_ingest();
    let sshd = Sshd::start(Ipv4Addr::new(127, 0, 0, 31), SshdOptions::default()).expect("sshd");
    let real = sshd.host_key_fingerprint().expect("fingerprint");
    rig.add_host("trust-1", &sshd);
    rig.wait_registered("trust-1", 0);

    // Without --fingerprint or --yes it only shows the key.
    let shown = rig.ctl_ok(&["host", "trust", "trust-1"]);
    assert!(shown.contains(&real), "{shown}");
    assert!(shown.contains("ssh-ed25519"), "{shown}");
    assert!(shown.contains("not pinned"), "{shown}");
    assert!(rig.pinned_events("trust-1").is_empty());

    // A fingerprint that does not match the scan is refused, naming both.
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let o = rig.ctl(&["host", "trust", "trust-1", "--fingerprint", wrong]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("mismatch"), "{err}");
    assert!(err.contains(wrong) && err.contains(&real), "{err}");
    assert!(rig.pinned_events("trust-1").is_empty());

    // The matching fingerprint pins it: a host.key_pinned event with that fingerprint.
    let out = rig.ctl_json(&["host", "trust", "trust-1", "--fingerprint", &real]);
    assert_eq!(out["pinned"], true, "{out}");
    assert_eq!(out["fingerprint"], real.as_str(), "{out}");
    // The command's event is on the bus before ingest's log (which `query` reads) has it.
    let pins = eventually(|| {
        let p = rig.pinned_events("trust-1");
        (!p.is_empty()).then_some(p)
    });
    assert_eq!(pins, vec![("ssh-ed25519".to_owned(), real.clone())]);

    // The registry now names the pinned key, and a second look says so.
    let again = eventually(|| {
        let out = rig.ctl_ok(&["host", "trust", "trust-1"]);
        out.contains("already pinned").then_some(out)
    });
    assert!(again.contains(&real), "{again}");

    // An unknown host is a clear error, nothing is scanned.
    let o = rig.ctl(&["host", "trust", "nope-1", "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("nope-1") && stderr(&o).contains("not registered"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn sudoers_prints_scoped_lines_that_visudo_accepts() {
    let mut rig = Rig::start();
    rig.start_ingest();
    rig.ctl_ok(&[
        "host",
        "add",
        "sudo-1",
        "--address",
        "127.0.0.32",
        "--user",
        "fleet",
    ]);
    rig.ctl_ok(&[
        "host",
        "add-service",
        "sudo-1",
        "web",
        "--manager",
        "runit",
        "--unit",
        "/srv/sudo-1/sv/web",
        "--action",
        "status",
        "--action",
        "restart",
        "--action",
        "logs",
    ]);
    rig.ctl_ok(&[
        "host",
        "add-service",
        "sudo-1",
        "nginx",
        "--manager",
        "systemd",
        "--unit",
        "nginx.service",
        "--action",
        "reload",
    ]);

    rig.wait_registered("sudo-1", 2);
    let text = rig.ctl_ok(&["sudoers", "--host", "sudo-1"]);
    assert!(text.contains("/srv/sudo-1/sv/web"), "{text}");
    assert!(text.contains("nginx.service"), "{text}");
    let rules: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(rules.len() >= 3, "{text}");
    for rule in &rules {
        assert!(rule.starts_with("fleet ALL=(root) NOPASSWD: /"), "{rule}");
        let command = rule
            .split_once("NOPASSWD:")
            .map(|x| x.1.trim())
            .unwrap_or("");
        assert_ne!(command, "ALL", "{rule}");
        assert!(!command.split_whitespace().any(|w| w == "ALL"), "{rule}");
    }
    let file = rig.state.path().join("sudoers-check");
    std::fs::write(&file, &text).expect("write sudoers");
    let check = Command::new("visudo")
        .arg("-cf")
        .arg(&file)
        .output()
        .expect("run visudo");
    assert!(
        check.status.success(),
        "visudo -cf: {}{}\n{text}",
        stdout(&check),
        stderr(&check)
    );

    let json = rig.ctl_json(&["sudoers", "--host", "sudo-1"]);
    assert_eq!(json["user"], "fleet");
    assert_eq!(json["lines"].as_array().map(|a| a.len()), Some(rules.len()));

    let o = rig.ctl(&["sudoers", "--host", "nope-1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not registered"), "{}", stderr(&o));
}

#[test]
fn do_runs_a_verb_through_the_executor_and_reports_rejections() {
    let mut rig = Rig::start();
    let sshd = Sshd::start(Ipv4Addr::new(127, 0, 0, 33), SshdOptions::default()).expect("sshd");
    let key = sshd
        .client_key()
        .map(|k| k.private.clone())
        .expect("generated client key");
    // The executor knows hosts only from the log: register the target through ingest.
    rig.start_ingest();
    let port = sshd.port().to_string();
    rig.ctl_ok(&[
        "host",
        "add",
        "do-1",
        "--address",
        &sshd.ip().to_string(),
        "--port",
        &port,
        "--user",
        "fleet",
        "--tag",
        "lab",
    ]);
    let conf = rig.state.path().join("executor.toml");
    let text = format!(
        "version = 1\nstate_dir = \"{}\"\n{}\n[ssh]\nkey = \"{}\"\n",
        rig.state.path().join("executor").display(),
        rig.nats_section(Role::Executor, "executor"),
        key.display(),
    );
    std::fs::write(&conf, text).expect("write executor config");
    let log = rig.spawn("fleetbus-executor", conf, "executor.log");

    // The executor consumes the job work queue once it runs; the first `do` waits for it.
    let out = rig.ctl_json(&["do", "SHOW-RESOURCES", "{}", "--tag", "lab"]);
    let jobs = out["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        jobs.len(),
        1,
        "{out}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(jobs[0]["state"], "succeeded", "{out}");
    assert_eq!(jobs[0]["host"], "do-1", "{out}");
    assert_eq!(jobs[0]["outcome"]["exit_code"], 0, "{out}");

    // Human output names the job, its state and exit code.
    let human = rig.ctl_ok(&["do", "SHOW-RESOURCES", "--host", "do-1"]);
    assert!(
        human.contains("on do-1: succeeded (exit code 0)"),
        "{human}"
    );

    // An unknown verb is rejected with the executor's reason, exit 1.
    let o = rig.ctl(&["do", "FROB-WIDGET", "{}", "--host", "do-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("rejected by executor"), "{err}");
    assert!(err.contains("FROB-WIDGET"), "{err}");

    // Arguments the verb does not take are rejected too.
    let o = rig.ctl(&["do", "SHOW-RESOURCES", r#"{"bogus": 1}"#, "--host", "do-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("bogus"), "{}", stderr(&o));

    // Usage errors never reach the bus.
    let o = rig.ctl(&["do", "SHOW-RESOURCES", "{}"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = rig.ctl(&["do", "show resources", "{}", "--host", "do-1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn do_restarts_a_real_runit_service_with_the_sudoers_fleetctl_generated() {
    use fleetbus_testkit::sshd::{RunitHost, SudoersFile};
    let mut rig = Rig::start();
    rig.start_ingest();
    let ip = Ipv4Addr::new(127, 0, 0, 34);
    let sshd = Sshd::start(ip, SshdOptions::default()).expect("sshd");
    let runit = RunitHost::start(ip).expect("runit");
    let key = sshd
        .client_key()
        .map(|k| k.private.clone())
        .expect("generated client key");
    let conf = rig.state.path().join("executor.toml");
    let text = format!(
        "version = 1\nstate_dir = \"{}\"\n{}\n[ssh]\nkey = \"{}\"\n",
        rig.state.path().join("executor").display(),
        rig.nats_section(Role::Executor, "executor"),
        key.display(),
    );
    std::fs::write(&conf, text).expect("write executor config");
    let log = rig.spawn("fleetbus-executor", conf, "executor.log");
    // The executor learns hosts from registry events it follows live: wait until it runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = rig.ctl_json(&[
            "query",
            "events",
            "--json-args",
            r#"{"domain": "system", "type_name": "component_started", "limit": 100}"#,
        ]);
        if page.to_string().contains("\"executor\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "executor did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let port = sshd.port().to_string();
    rig.ctl_ok(&[
        "host",
        "add",
        "do-2",
        "--address",
        &ip.to_string(),
        "--port",
        &port,
        "--user",
        "fleet",
        "--role",
        "frontend",
    ]);
    let web_dir = runit.service_dir("web").display().to_string();
    rig.ctl_ok(&[
        "host",
        "add-service",
        "do-2",
        "web",
        "--manager",
        "runit",
        "--unit",
        &web_dir,
        "--action",
        "status",
        "--action",
        "restart",
    ]);
    // Privilege on the target comes only from the lines fleetctl prints.
    rig.wait_registered("do-2", 1);
    let lines = rig.ctl_ok(&["sudoers", "--host", "do-2"]);
    let _sudoers = SudoersFile::install(
        &format!("fleetbus-fleetctl-do-{}", std::process::id()),
        &lines,
    )
    .expect("install sudoers");

    let pid = |status: &str| -> Option<String> {
        status
            .split("(pid ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .map(String::from)
    };
    let before = pid(&runit.sv_status("web").expect("sv status")).expect("web runs");

    let out = rig.ctl_json(&[
        "do",
        "RESTART-SERVICE",
        r#"{"service":"web"}"#,
        "--role",
        "frontend",
    ]);
    let jobs = out["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        jobs.len(),
        1,
        "{out}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(jobs[0]["state"], "succeeded", "{out}");
    assert_eq!(jobs[0]["outcome"]["exit_code"], 0, "{out}");
    let after = pid(&runit.sv_status("web").expect("sv status")).expect("web runs again");
    assert_ne!(before, after, "runit restarted web: new pid");

    let status = rig.ctl_ok(&[
        "do",
        "STATUS-SERVICE",
        r#"{"service":"web"}"#,
        "--host",
        "do-2",
    ]);
    assert!(
        status.contains("on do-2: succeeded (exit code 0)"),
        "{status}"
    );
    assert!(status.contains(&format!("(pid {after})")), "{status}");

    // A service that is not registered is rejected as not found, exit 1.
    let o = rig.ctl(&[
        "do",
        "RESTART-SERVICE",
        r#"{"service":"nope"}"#,
        "--host",
        "do-2",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("not_found"), "{}", stderr(&o));
}
