//! Managed agents end to end with real binaries: nats-server, `fleetbus-ingest`,
//! `fleetbus-agent` and `fleetctl` (build them first: `cargo build -p fleetbus-ingest -p
//! fleetbus-agent`). Create a config from a report, template + overrides, the agent applies it,
//! local edits show as drift, push restores, pull imports, self-update is acknowledged, a
//! snapshot comes back byte-identical through `fleetbus-agent restore`, assets round-trip.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fleetbus_testkit::NatsServer;
use sha2::{Digest, Sha256};

mod common;
use common::{healthy, stderr, stdout, Fleetctl};

struct Fleet {
    nats: NatsServer,
    state: tempfile::TempDir,
    http: SocketAddr,
    ingest: Option<Child>,
}

impl Fleetctl for Fleet {
    fn nats(&self) -> &NatsServer {
        &self.nats
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(mut c) = self.ingest.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Fleet {
    fn start() -> Fleet {
        let nats = NatsServer::start();
        let state = tempfile::tempdir().expect("tempdir");
        let http: SocketAddr = format!("127.0.0.1:{}", fleetbus_testkit::free_port())
            .parse()
            .expect("addr");
        let conf_path = state.path().join("ingest.toml");
        let conf = format!(
            "version = 1\nstate_dir = \"{}\"\nhttp_addr = \"{http}\"\n[nats]\nurl = \"{}\"\nuser = \"ingest\"\nnkey_seed_file = \"{}\"\n",
            state.path().display(),
            nats.url(),
            nats.credentials().seed_path(fleetbus_bus_config::Role::Ingest).display()
        );
        std::fs::write(&conf_path, conf).expect("write ingest config");
        let mut fleet = Fleet {
            nats,
            state,
            http,
            ingest: None,
        };
        fleet.ctl_ok(&["bus", "apply"]);
        let log = std::fs::File::create(fleet.state.path().join("ingest.log")).expect("log");
        let child = Command::new(fleetbus_testkit::bin_path("fleetbus-ingest"))
            .arg("--config")
            .arg(&conf_path)
            .env_remove("FLEETBUS_STATE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .spawn()
            .expect("start ingest");
        fleet.ingest = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(http) {
            assert!(
                Instant::now() < deadline,
                "ingest not healthy: {}",
                std::fs::read_to_string(fleet.state.path().join("ingest.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        fleet
    }

    fn drift(&self) -> serde_json::Value {
        self.ctl_json(&["config", "drift", "web-1"])
    }
}

struct AgentHost {
    dir: tempfile::TempDir,
    conf: PathBuf,
    managed: PathBuf,
}

impl AgentHost {
    fn new(http: SocketAddr, key_file: &Path) -> AgentHost {
        let dir = tempfile::tempdir().expect("tempdir");
        let managed = dir.path().join("app.toml");
        let conf = dir.path().join("agent.toml");
        let updated = dir.path().join("updated-to");
        let text = format!(
            "version = 1\ningest_url = \"http://{http}\"\nagent = \"web-1\"\nhost = \"web-1\"\n\
             key_file = \"{}\"\nbuffer_dir = \"{}\"\nrequest_timeout_secs = 5\n\
             [managed]\nfile = \"{}\"\nupdate_command = [\"/bin/sh\", \"-c\", \"echo {{version}} > {}\"]\n\
             snapshot_paths = [\"{}\"]\n",
            key_file.display(),
            dir.path().join("buffer").display(),
            managed.display(),
            updated.display(),
            dir.path().join("secret.env").display(),
        );
        std::fs::write(&conf, text).expect("write agent config");
        AgentHost { dir, conf, managed }
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(fleetbus_testkit::bin_path("fleetbus-agent"))
            .arg("--config")
            .arg(&self.conf)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run agent")
    }

    fn once(&self) {
        let o = self.run(&["once"], &[]);
        assert!(
            o.status.success(),
            "agent once: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }

    fn file(&self) -> String {
        std::fs::read_to_string(&self.managed).expect("managed file")
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn paths(drift: &serde_json::Value) -> Vec<(String, String)> {
    drift["differences"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap_or_default().to_owned(),
                d["kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_real_agent_is_managed_drifts_is_pushed_pulled_updated_and_restored() {
    let fleet = Fleet::start();
    fleet.ctl_ok(&[
        "host",
        "add",
        "web-1",
        "--address",
        "127.0.0.2",
        "--user",
        "fleet",
    ]);
    let keys = tempfile::tempdir().expect("tempdir");
    let key_file = keys.path().join("agent.key");
    fleet.ctl_ok(&[
        "agent",
        "add",
        "web-1",
        "--host",
        "web-1",
        "--key-file",
        key_file.to_str().unwrap_or_default(),
    ]);
    let host = AgentHost::new(fleet.http, &key_file);
    let work = host.dir.path();

    // A report-only agent with a hand-written config.
    std::fs::write(&host.managed, "port = 80\n[log]\nlevel = \"info\"\n").expect("write");
    host.once();
    let ls = fleet.ctl_json(&["config", "ls"]);
    assert_eq!(ls["agents"][0]["management"], "report_only", "{ls}");

    // Create config from report.
    fleet.ctl_ok(&["config", "pull", "web-1"]);
    let d = fleet.drift();
    assert_eq!(
        (d["desired_version"].as_u64(), d["state"].as_str()),
        (Some(1), Some("applying")),
        "{d}"
    );

    // Template + overrides → version 2; the agent applies it.
    std::fs::write(
        work.join("web.toml"),
        "port = 8080\n[log]\nlevel = \"warn\"\n[cache]\nsize_mb = 64\nwarm = false\n",
    )
    .expect("write");
    std::fs::write(work.join("over.toml"), "[cache]\nsize_mb = 256\n").expect("write");
    fleet.ctl_ok(&[
        "config",
        "template",
        "set",
        "web",
        "--file",
        work.join("web.toml").to_str().unwrap_or_default(),
        "--volatile",
        "cache.warm",
    ]);
    fleet.ctl_ok(&[
        "config",
        "assign",
        "web-1",
        "--template",
        "web",
        "--overrides",
        work.join("over.toml").to_str().unwrap_or_default(),
    ]);
    host.once();
    let show = fleet.ctl_json(&["config", "show", "web-1"]);
    assert_eq!(show["desired"]["version"], 2, "{show}");
    assert_eq!(
        host.file(),
        show["desired"]["toml"].as_str().unwrap_or_default()
    );
    assert!(host.file().contains("size_mb = 256"));
    // The report after the apply carries version 2: in sync.
    host.once();
    let d = fleet.drift();
    assert_eq!(d["state"], "in_sync", "{d}");
    assert_eq!(d["applied_version"], 2);

    // Local edits: drift per key (the volatile key is ignored), and --check fails.
    let edited = host
        .file()
        .replace("size_mb = 256", "size_mb = 512")
        .replace("warm = false", "warm = true");
    std::fs::write(&host.managed, &edited).expect("edit");
    host.once();
    let d = fleet.drift();
    assert_eq!(d["state"], "drifted", "{d}");
    assert_eq!(
        paths(&d),
        vec![("cache.size_mb".to_string(), "changed".to_string())]
    );
    let human = fleet.ctl_ok(&["config", "drift", "web-1"]);
    assert!(
        human.contains("cache.size_mb") && human.contains("512"),
        "{human}"
    );
    let o = fleet.ctl(&["config", "drift", "web-1", "--check"]);
    assert!(!o.status.success(), "--check must fail on drift");

    // Push: the agent rewrites the file and acknowledges.
    fleet.ctl_ok(&["config", "push", "web-1"]);
    host.once();
    assert!(host.file().contains("size_mb = 256"));
    host.once();
    let show = fleet.ctl_json(&["config", "show", "web-1"]);
    assert_eq!(show["push"]["ack"]["ok"], true, "{show}");
    assert_eq!(show["drift"]["state"], "in_sync", "{show}");

    // Pull: a deliberate local change becomes the desired config (version 3).
    std::fs::write(
        &host.managed,
        host.file().replace("port = 8080", "port = 9090"),
    )
    .expect("edit");
    host.once();
    fleet.ctl_ok(&["config", "pull", "web-1"]);
    host.once();
    host.once();
    let show = fleet.ctl_json(&["config", "show", "web-1"]);
    assert_eq!(show["desired"]["version"], 3, "{show}");
    assert_eq!(show["desired"]["template"], "web");
    assert_eq!(show["drift"]["state"], "in_sync", "{show}");
    assert!(host.file().contains("port = 9090"));

    // Trigger update: the agent runs its update command and acknowledges.
    fleet.ctl_ok(&["config", "update", "web-1", "0.9.9"]);
    host.once();
    assert_eq!(
        std::fs::read_to_string(work.join("updated-to"))
            .expect("updated")
            .trim(),
        "0.9.9"
    );
    let show = fleet.ctl_json(&["config", "show", "web-1"]);
    assert_eq!(show["update"]["ack"]["ok"], true, "{show}");

    // Blocked: limited mode — the agent keeps reporting but changes nothing until unblocked.
    fleet.ctl_ok(&["agent", "block", "web-1", "--reason", "maintenance"]);
    wait_for("blocked in the registry", || {
        fleet.ctl_json(&["agent", "ls"])["web-1"]["blocked"] == true
    });
    let local = host.file().replace("port = 9090", "port = 1");
    std::fs::write(&host.managed, &local).expect("edit");
    fleet.ctl_ok(&["config", "push", "web-1"]);
    wait_for("push pending", || {
        let show = fleet.ctl_json(&["config", "show", "web-1"]);
        show["push"]["id"].is_string() && show["push"]["ack"].is_null() && show["blocked"] == true
    });
    host.once();
    assert_eq!(host.file(), local, "a blocked agent must not apply");
    let show = fleet.ctl_json(&["config", "show", "web-1"]);
    assert!(show["push"]["ack"].is_null(), "{show}");
    assert_eq!(show["drift"]["state"], "drifted", "{show}");
    fleet.ctl_ok(&["agent", "unblock", "web-1"]);
    wait_for("unblocked", || {
        fleet.ctl_json(&["agent", "ls"])["web-1"]["blocked"] == false
    });
    host.once();
    assert!(host.file().contains("port = 9090"), "{}", host.file());
    assert_eq!(
        fleet.ctl_json(&["config", "show", "web-1"])["push"]["ack"]["ok"],
        true
    );

    // Malformed config files are refused before anything is sent.
    std::fs::write(work.join("bad.toml"), "port = [1,\n").expect("write");
    let o = fleet.ctl(&[
        "config",
        "set",
        "web-1",
        "--file",
        work.join("bad.toml").to_str().unwrap_or_default(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not valid TOML"), "{}", stderr(&o));
    assert_eq!(fleet.drift()["desired_version"], 3);

    // Snapshot and restore on a fresh host.
    let pass = fleet.ctl_json(&["config", "passphrase", "web-1"]);
    let passphrase = pass["passphrase"].as_str().expect("passphrase").to_owned();
    let snap: Vec<u8> = b"[disks]\nroot = \"/dev/vda1\"\n"
        .iter()
        .copied()
        .chain((0..200_000u32).map(|i| (i % 253) as u8))
        .collect();
    std::fs::write(work.join("snap.bin"), &snap).expect("write");
    let o = host.run(
        &[
            "snapshot",
            work.join("snap.bin").to_str().unwrap_or_default(),
        ],
        &[],
    );
    assert!(o.status.success(), "snapshot: {}", stderr(&o));
    assert!(stdout(&o).contains(&hex::encode(Sha256::digest(&snap))));

    let fresh = AgentHost::new(fleet.http, &keys.path().join("no-key-yet"));
    let out = fresh.dir.path().join("restored.bin");
    let o = fresh.run(
        &[
            "restore",
            "--snapshot-out",
            out.to_str().unwrap_or_default(),
        ],
        &[("FLEETBUS_PASSPHRASE", "wrong words entirely")],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    assert!(!out.exists());
    let o = fresh.run(
        &[
            "restore",
            "--snapshot-out",
            out.to_str().unwrap_or_default(),
        ],
        &[("FLEETBUS_PASSPHRASE", &passphrase.to_uppercase())],
    );
    assert!(o.status.success(), "restore: {}{}", stdout(&o), stderr(&o));
    assert!(
        std::fs::read(&out).expect("restored") == snap,
        "restored snapshot differs"
    );
    assert_eq!(
        fresh.file(),
        fleet.ctl_json(&["config", "show", "web-1"])["desired"]["toml"]
            .as_str()
            .unwrap_or_default()
    );

    // A collected snapshot (managed file + secrets + disk layout), unpacked on a fresh host.
    let secret = b"DB_PASSWORD=correct horse battery staple\n";
    std::fs::write(work.join("secret.env"), secret).expect("write");
    let o = host.run(&["snapshot"], &[]);
    assert!(o.status.success(), "collected snapshot: {}", stderr(&o));
    let fresh2 = AgentHost::new(fleet.http, &keys.path().join("no-key-yet"));
    let root = fresh2.dir.path().join("root");
    let out2 = fresh2.dir.path().join("bundle.json");
    let o = fresh2.run(
        &[
            "restore",
            "--snapshot-out",
            out2.to_str().unwrap_or_default(),
            "--unpack-to",
            root.to_str().unwrap_or_default(),
        ],
        &[("FLEETBUS_PASSPHRASE", &passphrase)],
    );
    assert!(
        o.status.success(),
        "restore --unpack-to: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let rel = |p: &Path| root.join(p.strip_prefix("/").expect("absolute"));
    assert_eq!(
        std::fs::read(rel(&work.join("secret.env"))).expect("secret restored"),
        secret
    );
    assert_eq!(
        std::fs::read_to_string(rel(&host.managed)).expect("managed restored"),
        host.file()
    );
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out2).expect("bundle")).expect("json");
    assert_eq!(bundle["format"], "fleetbus-snapshot/1");
    assert!(
        bundle["mounts"]
            .as_str()
            .unwrap_or_default()
            .contains(" / "),
        "disk layout: {bundle}"
    );

    // Assets.
    let logo: Vec<u8> = (0..30_000u32).map(|i| (i * 31 % 256) as u8).collect();
    std::fs::write(work.join("logo.png"), &logo).expect("write");
    fleet.ctl_ok(&[
        "asset",
        "put",
        work.join("logo.png").to_str().unwrap_or_default(),
        "--name",
        "brand/logo.png",
    ]);
    let ls = fleet.ctl_json(&["asset", "ls"]);
    assert_eq!(ls["assets"][0]["name"], "brand/logo.png");
    assert_eq!(
        ls["assets"][0]["sha256"],
        hex::encode(Sha256::digest(&logo))
    );
    assert_eq!(ls["assets"][0]["content_type"], "image/png");
    // The agent downloads it, and only once.
    let assets_dir = work.join("assets");
    let o = host.run(
        &["assets", "--dir", assets_dir.to_str().unwrap_or_default()],
        &[],
    );
    assert!(o.status.success(), "assets: {}", stderr(&o));
    assert!(stdout(&o).contains("1 downloaded"), "{}", stdout(&o));
    assert!(std::fs::read(assets_dir.join("brand/logo.png")).expect("downloaded") == logo);
    let o = host.run(
        &["assets", "--dir", assets_dir.to_str().unwrap_or_default()],
        &[],
    );
    assert!(
        stdout(&o).contains("0 downloaded, 1 unchanged"),
        "{}",
        stdout(&o)
    );
    fleet.ctl_ok(&["asset", "rm", "brand/logo.png"]);
    assert_eq!(
        fleet.ctl_json(&["asset", "ls"])["assets"],
        serde_json::json!([])
    );
    let o = fleet.ctl(&["asset", "rm", "brand/logo.png"]);
    assert!(!o.status.success());
}
