//! `fleetctl schedule|check|notify` against a real nats-server and the real `fleetbus-scheduler`
//! and `fleetbus-notifier` binaries (build them first: `cargo build -p fleetbus-scheduler -p
//! fleetbus-notifier`), plus the argument and file errors that never reach the bus.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fleetbus_bus_config::Role;
use fleetbus_testkit::NatsServer;

mod common;
use common::{stderr, stdout, Fleetctl, FLEETCTL};

/// A service process, stopped with SIGTERM (by its own pid) when dropped.
struct Service {
    child: Child,
    log: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Fleet {
    nats: NatsServer,
    _dir: tempfile::TempDir,
    services: Vec<Service>,
}

fn spawn(bin: &str, dir: &Path, name: &str, conf: String) -> Service {
    let conf_path = dir.join(format!("{name}.toml"));
    std::fs::write(&conf_path, conf).expect("write config");
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).expect("log file");
    let child = Command::new(fleetbus_testkit::bin_path(bin))
        .arg("--config")
        .arg(&conf_path)
        .env_remove("FLEETBUS_STATE")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone"))
        .stderr(out)
        .spawn()
        .expect("start service");
    Service { child, log }
}

impl Fleetctl for Fleet {
    fn nats(&self) -> &NatsServer {
        &self.nats
    }

    fn context(&self) -> String {
        format!("\nservice logs:\n{}", self.logs())
    }
}

impl Fleet {
    fn start() -> Fleet {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fleet = Fleet {
            nats,
            _dir: dir,
            services: Vec::new(),
        };
        let o = fleet.ctl(&["bus", "apply"]);
        assert!(o.status.success(), "bus apply: {}", stderr(&o));
        let nats_section = |role: Role| {
            let c = fleet.nats.nats_config(role);
            format!(
                "[nats]\nurl = {:?}\nuser = {:?}\nnkey_seed_file = {:?}\n",
                c.url,
                c.user,
                c.seed_file().display().to_string()
            )
        };
        let scheduler = format!(
            "version = 1\n\n{}\n[retention]\nenabled = false\n",
            nats_section(Role::Scheduler)
        );
        let notifier = format!("version = 1\n\n{}", nats_section(Role::Notifier));
        let dir = fleet._dir.path().to_owned();
        fleet
            .services
            .push(spawn("fleetbus-scheduler", &dir, "scheduler", scheduler));
        fleet
            .services
            .push(spawn("fleetbus-notifier", &dir, "notifier", notifier));
        fleet
    }

    fn logs(&self) -> String {
        self.services
            .iter()
            .map(|s| std::fs::read_to_string(&s.log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    fn stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .ctl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run fleetctl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("fleetctl output")
    }

    fn rejected(&self, args: &[&str], needle: &str) {
        let o = self.ctl(args);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let err = stderr(&o);
        assert!(
            err.contains("rejected by") && err.contains(needle),
            "{args:?}: expected a rejection naming {needle:?}: {err}"
        );
    }
}

#[test]
fn schedules_and_checks_go_through_the_real_scheduler() {
    let fleet = Fleet::start();

    // A valid schedule: the scheduler accepts it and fleetctl prints the event.
    let out = fleet.ctl_ok(&[
        "schedule",
        "create",
        "poll-web",
        "--cron",
        "0 */5 * * * *",
        "--tz",
        "Europe/Helsinki",
        "--poll-tag",
        "web",
        "--missed",
        "skip",
    ]);
    assert!(out.contains("fleet.evt.schedule.poll-web.created"), "{out}");

    // Bad cron and unknown time zone: rejected with the scheduler's reason, exit 1.
    fleet.rejected(
        &[
            "schedule",
            "create",
            "bad-cron",
            "--cron",
            "every tuesday",
            "--poll-tag",
            "web",
        ],
        "invalid cron expression",
    );
    fleet.rejected(
        &[
            "schedule",
            "create",
            "bad-tz",
            "--cron",
            "0 0 * * * *",
            "--tz",
            "Mars/Olympus_Mons",
            "--poll-tag",
            "web",
        ],
        "Mars/Olympus_Mons",
    );

    // A task schedule with params and targets, then pause: `ls` folds all of it.
    // A task the executor never saved is refused by name.
    fleet.rejected(
        &[
            "schedule",
            "create",
            "rotate",
            "--cron",
            "0 0 3 * * *",
            "--task",
            "rotate-logs",
            "--param",
            "keep=7",
            "--tag",
            "web",
        ],
        "unknown task rotate-logs",
    );
    // Any command from a file (here standard input) as the action.
    let o = fleet.stdin(
        &[
            "schedule",
            "create",
            "nightly-remove",
            "--cron",
            "0 0 3 * * *",
            "--command-file",
            "-",
        ],
        r#"{"area": "host", "body": {"type": "remove", "data": {"host": "web-9"}}}"#,
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("fleet.evt.schedule.nightly-remove.created"),
        "{}",
        stdout(&o)
    );
    let paused = fleet.ctl_json(&["schedule", "pause", "poll-web"]);
    assert_eq!(
        paused["subject"], "fleet.evt.schedule.poll-web.paused",
        "{paused}"
    );
    let rows = fleet.ctl_json(&["schedule", "ls"]);
    let rows = rows.as_array().expect("array");
    let web = rows
        .iter()
        .find(|r| r["schedule"] == "poll-web")
        .unwrap_or_else(|| panic!("poll-web not listed: {rows:?}"));
    assert_eq!(web["paused"], true);
    assert_eq!(web["cron"], "0 */5 * * * *");
    assert_eq!(web["time_zone"], "Europe/Helsinki");
    assert_eq!(web["missed"], "skip");
    assert_eq!(web["action"]["targets"]["tags"][0], "web");
    let remove = rows
        .iter()
        .find(|r| r["schedule"] == "nightly-remove")
        .unwrap_or_else(|| panic!("nightly-remove not listed: {rows:?}"));
    assert_eq!(remove["action"]["command"]["body"]["data"]["host"], "web-9");
    assert_eq!(remove["owner"], "admin");
    assert!(
        rows.iter()
            .all(|r| !["bad-cron", "bad-tz", "rotate"]
                .contains(&r["schedule"].as_str().unwrap_or(""))),
        "rejected schedules must not be listed: {rows:?}"
    );
    fleet.ctl_ok(&["schedule", "rm", "poll-web"]);
    let rows = fleet.ctl_json(&["schedule", "ls"]);
    assert!(
        rows.as_array()
            .expect("array")
            .iter()
            .all(|r| r["schedule"] != "poll-web"),
        "deleted schedule still listed: {rows}"
    );
    // Deleting it again names the unknown id.
    fleet.rejected(&["schedule", "rm", "poll-web"], "poll-web");

    // Checks: define, pause (a state change to paused), list.
    let out = fleet.ctl_ok(&[
        "check",
        "heartbeat",
        "cron-ping",
        "--period",
        "300",
        "--grace",
        "60",
    ]);
    assert!(out.contains("fleet.evt.check.cron-ping.defined"), "{out}");
    let out = fleet.ctl_ok(&[
        "check",
        "deadline",
        "nightly-backup",
        "--kind",
        "backup_succeeded",
        "--host",
        "db-1",
        "--by",
        "05:00",
        "--tz",
        "Europe/Helsinki",
    ]);
    assert!(
        out.contains("fleet.evt.check.nightly-backup.defined"),
        "{out}"
    );
    fleet.rejected(
        &[
            "check",
            "deadline",
            "bad-tz",
            "--kind",
            "backup_succeeded",
            "--host",
            "db-1",
            "--by",
            "05:00",
            "--tz",
            "Nowhere/Special",
        ],
        "Nowhere/Special",
    );
    fleet.ctl_ok(&["check", "pause", "cron-ping"]);
    let checks = fleet.ctl_json(&["check", "ls"]);
    let checks = checks.as_array().expect("array");
    let ping = checks
        .iter()
        .find(|c| c["check"] == "cron-ping")
        .unwrap_or_else(|| panic!("cron-ping not listed: {checks:?}"));
    assert_eq!(ping["state"], "paused");
    assert_eq!(ping["kind"]["period_s"], 300);
    let backup = checks
        .iter()
        .find(|c| c["check"] == "nightly-backup")
        .unwrap_or_else(|| panic!("nightly-backup not listed: {checks:?}"));
    assert_eq!(backup["state"], "new");
    assert_eq!(backup["kind"]["by"], "05:00");
    assert!(checks.iter().all(|c| c["check"] != "bad-tz"), "{checks:?}");
}

#[test]
fn notification_rules_recipients_channels_and_mutes_go_through_the_real_notifier() {
    let fleet = Fleet::start();
    let dir = tempfile::tempdir().expect("tempdir");

    // A channel (JSON file), a recipient (TOML file), then a rule naming both (standard input).
    let channel = dir.path().join("channel.json");
    std::fs::write(
        &channel,
        r#"{"channel": "ops-nats", "kind": {"kind": "nats"}, "max_attempts": 3}"#,
    )
    .expect("write");
    let out = fleet.ctl_ok(&["notify", "channel", "set", channel.to_str().expect("utf-8")]);
    assert!(
        out.contains("fleet.evt.notification.ops-nats.channel_set"),
        "{out}"
    );
    let recipient = dir.path().join("alice.toml");
    std::fs::write(
        &recipient,
        "recipient = \"alice\"\ndisplay_name = \"Alice\"\nemail = \"alice@example.com\"\nmin_severity = \"warn\"\n",
    )
    .expect("write");
    fleet.ctl_ok(&[
        "notify",
        "recipient",
        "set",
        recipient.to_str().expect("utf-8"),
    ]);
    let o = fleet.stdin(
        &["--json", "notify", "rule", "set", "-"],
        r#"{"rule": "page-ops", "matches": {"kinds": ["service_down"], "tags": ["web"]},
            "recipients": ["alice"], "channels": ["ops-nats"], "cooldown_s": 300}"#,
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let accepted: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        accepted["subject"], "fleet.evt.notification.page-ops.rule_set",
        "{accepted}"
    );

    // A rule naming a recipient nobody defined: the notifier refuses it by name.
    let o = fleet.stdin(
        &["notify", "rule", "set", "-"],
        "rule = \"page-bob\"\nrecipients = [\"bob\"]\nchannels = [\"ops-nats\"]\n",
    );
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("rejected by") && stderr(&o).contains("bob"),
        "{}",
        stderr(&o)
    );

    // A mute for people: until a duration from now.
    let out = fleet.ctl_ok(&[
        "notify",
        "mute",
        "add",
        "db-work",
        "--host",
        "db-1",
        "--until",
        "2h",
        "--reason",
        "disk swap",
    ]);
    assert!(
        out.contains("fleet.evt.notification.db-work.mute_set"),
        "{out}"
    );

    let listing = fleet.ctl_json(&["notify", "ls"]);
    assert_eq!(listing["rules"]["page-ops"]["cooldown_s"], 300, "{listing}");
    assert_eq!(listing["rules"]["page-ops"]["recipients"][0], "alice");
    assert!(listing["rules"].get("page-bob").is_none(), "{listing}");
    assert_eq!(listing["recipients"]["alice"]["email"], "alice@example.com");
    assert_eq!(listing["channels"]["ops-nats"]["max_attempts"], 3);
    assert_eq!(listing["mutes"]["db-work"]["reason"], "disk swap");
    assert_eq!(listing["mutes"]["db-work"]["window"]["kind"], "ad_hoc");

    // Deleting a rule removes it from the listing; the human listing names what is left.
    fleet.ctl_ok(&["notify", "rule", "rm", "page-ops"]);
    fleet.ctl_ok(&["notify", "mute", "rm", "db-work"]);
    let text = fleet.ctl_ok(&["notify", "ls"]);
    assert!(
        !text.contains("page-ops") && !text.contains("db-work"),
        "{text}"
    );
    assert!(
        text.contains("alice") && text.contains("ops-nats"),
        "{text}"
    );
}

/// fleetctl pointed at a port where nothing listens: anything that reaches for the bus fails
/// with a connect error, so a different error proves it was caught before sending.
fn offline(args: &[&str], input: Option<&str>) -> Output {
    let state = tempfile::tempdir().expect("tempdir");
    let port = fleetbus_testkit::free_port();
    let mut c = Command::new(FLEETCTL);
    c.arg("--state")
        .arg(state.path())
        .arg("--nats-url")
        .arg(format!("nats://127.0.0.1:{port}"))
        .arg("--timeout")
        .arg("2")
        .args(args)
        .env_remove("FLEETBUS_CREDS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("run fleetctl");
    if let Some(text) = input {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().expect("output")
}

#[test]
fn argument_garbage_is_exit_2_and_malformed_spec_files_fail_before_sending() {
    let garbage: &[&[&str]] = &[
        &["schedule"],
        &["schedule", "create", "x", "--poll-tag", "web"],
        &["schedule", "create", "x", "--cron", "0 * * * * *"],
        &[
            "schedule",
            "create",
            "x",
            "--cron",
            "0 * * * * *",
            "--poll-tag",
            "web",
            "--task",
            "t",
        ],
        &[
            "schedule",
            "create",
            "x",
            "--cron",
            "0 * * * * *",
            "--poll-tag",
            "web",
            "--param",
            "a=1",
        ],
        &[
            "schedule",
            "create",
            "x",
            "--cron",
            "0 * * * * *",
            "--poll-tag",
            "web",
            "--missed",
            "sometimes",
        ],
        &[
            "schedule",
            "create",
            "Not An Id",
            "--cron",
            "0 * * * * *",
            "--poll-tag",
            "web",
        ],
        &[
            "schedule",
            "create",
            "x",
            "--cron",
            "0 * * * * *",
            "--task",
            "t",
        ],
        &["check", "heartbeat", "c", "--period", "0"],
        &["check", "heartbeat", "c"],
        &[
            "check", "deadline", "c", "--kind", "k", "--host", "h", "--by", "25:00",
        ],
        &["notify", "rule"],
        &["notify", "rule", "rm", "Bad Id"],
        &["notify", "mute", "add", "m", "--until", "someday"],
        &["notify", "mute", "add", "m", "--until", "-5m"],
        &["notify", "frobnicate"],
    ];
    for args in garbage {
        let o = offline(args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty(), "{args:?}: no message");
        assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        // Unknown key, named.
        (
            "rule.json",
            r#"{"rule": "r", "recipients": ["a"], "channels": ["c"], "colour": "red"}"#,
            "colour",
        ),
        // Structurally valid but fails the spec's own checks.
        (
            "rule.toml",
            "rule = \"r\"\nrecipients = []\nchannels = [\"c\"]\n",
            "recipients is empty",
        ),
        // Not TOML at all.
        ("rule2.toml", "rule = \n", "rule2.toml"),
        // A bad id inside the file, with where.
        (
            "rule3.json",
            r#"{"rule": "Bad Rule", "recipients": ["a"], "channels": ["c"]}"#,
            "rule",
        ),
    ];
    for (name, text, needle) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let o = offline(
            &["notify", "rule", "set", path.to_str().expect("utf-8")],
            None,
        );
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(needle) && err.contains(name) && !err.contains("connect"),
            "{name}: expected {needle:?}, naming the file, before any connection: {err}"
        );
    }
    // Other kinds, and standard input.
    let o = offline(
        &["notify", "channel", "set", "-"],
        Some(r#"{"channel": "hook", "kind": {"kind": "webhook", "url": "ftp://x"}}"#),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("standard input") && stderr(&o).contains("http://"),
        "{}",
        stderr(&o)
    );
    let o = offline(
        &["notify", "mute", "set", "-"],
        Some("mute = \"m\"\n[window]\nkind = \"scheduled\"\nstart = \"02:00\"\nend = \"02:00\"\ntime_zone = \"UTC\"\n"),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("equal"), "{}", stderr(&o));
    // A malformed --command-file for a schedule is caught before sending too.
    let o = offline(
        &[
            "schedule",
            "create",
            "x",
            "--cron",
            "0 * * * * *",
            "--command-file",
            "-",
        ],
        Some(r#"{"area": "host", "body": {"type": "remove", "data": {"host": "Bad Host"}}}"#),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("body.data.host") && !stderr(&o).contains("connect"),
        "{}",
        stderr(&o)
    );
    // A missing file is named.
    let o = offline(
        &["notify", "recipient", "set", "/nonexistent/alice.toml"],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/alice.toml"),
        "{}",
        stderr(&o)
    );
}
