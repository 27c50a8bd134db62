//! What the fleetctl end-to-end tests share: running the real `fleetctl` binary against a test
//! bus, and probing a service's health endpoint.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use fleetbus_testkit::NatsServer;

pub(crate) const FLEETCTL: &str = env!("CARGO_BIN_EXE_fleetctl");

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `GET /healthz` answers 200.
pub(crate) fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200")
}

/// `fleetctl` run against a test fleet's bus (its state dir holds the admin seed).
pub(crate) trait Fleetctl {
    /// The fleet's nats-server.
    fn nats(&self) -> &NatsServer;

    /// More to show when a command fails (e.g. service logs).
    fn context(&self) -> String {
        String::new()
    }

    fn ctl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(FLEETCTL);
        c.arg("--state")
            .arg(self.nats().dir())
            .arg("--nats-url")
            .arg(self.nats().url())
            .arg("--timeout")
            .arg("20")
            .args(args)
            .env_remove("FLEETBUS_CREDS");
        c
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_cmd(args).output().expect("run fleetctl")
    }

    /// Runs a verb that must succeed; its stdout.
    fn ctl_ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "fleetctl {args:?} failed ({:?}): {}{}{}",
            o.status.code(),
            stdout(&o),
            stderr(&o),
            self.context()
        );
        stdout(&o)
    }

    /// Runs a verb with `--json` that must succeed; its parsed output.
    fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.ctl_ok(&full);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }
}
