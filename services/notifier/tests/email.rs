//! Email through a real SMTP server: aiosmtpd (PyPI) writing a Maildir that the test reads.
//! Skipped, with a message saying how to install it, only when `aiosmtpd` is not importable.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fleetbus_schemas::commands::notify::{ChannelKind, ChannelSpec, RecipientKind};
use fleetbus_schemas::events::agent::ServiceState;
use fleetbus_schemas::events::NotificationEvent;

/// `FLEETBUS_PYTHON`, else `python3` on PATH.
fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLEETBUS_PYTHON").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("python3"))
            .find(|p| p.is_file())
    })
}

fn aiosmtpd_python() -> Option<PathBuf> {
    let py = python()?;
    let ok = Command::new(&py)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(py)
}

struct Smtp {
    child: Child,
    port: u16,
    maildir: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_smtp(py: &Path, dir: &Path) -> Smtp {
    let port = fleetbus_testkit::free_port();
    let maildir = dir.join("maildir");
    let child = Command::new(py)
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start aiosmtpd");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "aiosmtpd did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Smtp {
        child,
        port,
        maildir,
    }
}

fn mails(maildir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else {
        return vec![];
    };
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        // Undo quoted-printable soft line breaks so phrases can be searched.
        .map(|m| m.replace("=\r\n", "").replace("=\n", ""))
        .collect()
}

fn email_channel(id: &str, port: u16, starttls: bool) -> ChannelSpec {
    ChannelSpec {
        channel: id.parse().unwrap(),
        kind: ChannelKind::Email {
            smtp_host: "127.0.0.1".into(),
            smtp_port: port,
            starttls,
            from: "fleetbus@example.com".into(),
            username: None,
            password_secret: None,
        },
        timeout_ms: 5000,
        max_attempts: 1,
    }
}

#[tokio::test]
async fn operators_and_customers_get_their_own_emails_through_a_real_smtp_server() {
    let Some(py) = aiosmtpd_python() else {
        eprintln!(
            "SKIPPED: aiosmtpd is not importable by python3; install it with \
             `python3 -m pip install aiosmtpd==1.4.6` (or set FLEETBUS_PYTHON)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let smtp = start_smtp(&py, dir.path());
    let bus = Bus::start().await;
    let mut config = bus.config();
    config.channels = vec![
        email_channel("mail", smtp.port, false),
        email_channel("mail-tls", smtp.port, true),
    ];
    let mut cust = operator("cust");
    cust.kind = RecipientKind::Customer;
    cust.owns = vec!["acme".into()];
    cust.display_name = "Acme Corp".into();
    config.recipients = vec![operator("alice"), cust, operator("tess")];
    config.rules = vec![
        rule("mail-all", &["alice", "cust"], &["mail"]),
        rule("mail-tls", &["tess"], &["mail-tls"]),
    ];
    let (stop, task) = spawn_notifier(config);

    bus.publish(host_registered("shop-1", &["acme"])).await;
    let opened = bus
        .publish(service("shop-1", "nginx", ServiceState::Failed))
        .await;
    let ok = fleetbus_testkit::wait_for(
        || {
            let n = mails(&smtp.maildir).len();
            async move { n >= 2 }
        },
        Duration::from_secs(10),
    )
    .await;
    let got = mails(&smtp.maildir);
    assert!(ok, "expected 2 mails, got {}: {got:#?}", got.len());
    let to_alice = got
        .iter()
        .find(|m| m.contains("To: alice@example.com"))
        .expect("mail to alice");
    let to_cust = got
        .iter()
        .find(|m| m.contains("To: cust@example.com"))
        .expect("mail to customer");
    for m in [to_alice, to_cust] {
        assert!(
            m.contains("Subject: [fleetbus] ERROR: shop-1:nginx is failed"),
            "{m}"
        );
        assert!(m.contains("multipart/alternative"), "{m}");
        assert!(m.contains("text/plain") && m.contains("text/html"), "{m}");
        assert!(m.contains("Message-ID: <n-"), "{m}");
        assert!(m.contains("Idempotency-Key: n-"), "{m}");
    }
    assert!(
        to_alice.contains(&opened.id.to_string()),
        "operators see the alert id"
    );
    assert!(to_cust.contains("Hello Acme Corp"), "{to_cust}");
    assert!(
        !to_cust.contains(&opened.id.to_string()),
        "customers get no internals"
    );

    // STARTTLS configured but not offered by the server: no plaintext fallback, a failed event.
    bus.wait_log("failed starttls", |log| {
        log.iter().any(|e| {
            matches!(e, NotificationEvent::Failed { notification, reason, .. }
            if notification.channel.as_str() == "mail-tls" && reason.to_lowercase().contains("tls"))
        })
    })
    .await;
    assert!(!mails(&smtp.maildir)
        .iter()
        .any(|m| m.contains("tess@example.com")));
    bus.wait_log("two sent", |log| {
        log.iter()
            .filter(|e| matches!(e, NotificationEvent::Sent { .. }))
            .count()
            == 2
    })
    .await;
    stop.cancel();
    task.await.unwrap();
}
