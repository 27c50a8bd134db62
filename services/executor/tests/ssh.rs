//! The SSH layer against real OpenSSH sshd targets.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use fleetbus_executor::ssh::known_hosts::KnownHosts;
use fleetbus_executor::ssh::{End, ExecEvent, KeyNotice, SshPool, SshSettings, Target};
use fleetbus_executor::ExecError;
use fleetbus_schemas::events::host::HostKeyPolicy;
use fleetbus_schemas::events::job::OutputStream;
use fleetbus_schemas::HostId;
use fleetbus_testkit::sshd::{self, Algorithms, Sshd, SshdOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

struct Rig {
    sshd: Sshd,
    pool: SshPool,
    notices: mpsc::UnboundedReceiver<KeyNotice>,
    target: Target,
    _dir: tempfile::TempDir,
}

fn rig(n: u8, policy: HostKeyPolicy, pool: bool) -> anyhow::Result<Rig> {
    let sshd = Sshd::start(ip(n), SshdOptions::default())?;
    let dir = tempfile::tempdir()?;
    let known = Arc::new(KnownHosts::open(&dir.path().join("known_hosts.json"))?);
    let key = sshd
        .client_key()
        .ok_or_else(|| anyhow::anyhow!("no client key"))?;
    let mut settings = SshSettings::new(&key.private);
    settings.pool = pool;
    settings.kill_grace = Duration::from_millis(500);
    let (tx, notices) = mpsc::unbounded_channel();
    let pool = SshPool::new(settings, known, tx)?;
    let target = Target {
        host: HostId::new(format!("h{n}"))?,
        address: sshd.ip().to_string(),
        port: sshd.port(),
        user: sshd.user().to_string(),
        policy,
    };
    Ok(Rig {
        sshd,
        pool,
        notices,
        target,
        _dir: dir,
    })
}

#[derive(Default, Debug)]
struct Collected {
    stdout: String,
    stderr: String,
    steps: Vec<(u32, u32)>,
}

fn collect(rx: &mut mpsc::UnboundedReceiver<ExecEvent>) -> Collected {
    let mut c = Collected::default();
    while let Ok(e) = rx.try_recv() {
        match e {
            ExecEvent::Output {
                stream: OutputStream::Stdout,
                data,
            } => c.stdout.push_str(&data),
            ExecEvent::Output {
                stream: OutputStream::Stderr,
                data,
            } => c.stderr.push_str(&data),
            ExecEvent::Step { step, total } => c.steps.push((step, total)),
        }
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_stdout_stderr_and_the_exit_code() -> anyhow::Result<()> {
    let r = rig(10, HostKeyPolicy::AcceptNew, true)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let out = r
        .pool
        .exec(
            &r.target,
            "printf '\\033[31mred\\033[0m\\n'; echo oops >&2; id -un; exit 3",
            None,
            &CancellationToken::new(),
            &tx,
        )
        .await?;
    assert_eq!(out.end, End::Exited);
    assert_eq!(out.exit_code, Some(3));
    let c = collect(&mut rx);
    assert_eq!(c.stdout, "\x1b[31mred\x1b[0m\nfleet\n");
    // The wrapper's control line never reaches the output.
    assert_eq!(c.stderr, "oops\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connection_is_reused_and_reconnects_after_a_drop() -> anyhow::Result<()> {
    let r = rig(11, HostKeyPolicy::AcceptNew, true)?;
    let run = |line: &'static str| {
        let pool = r.pool.clone();
        let target = r.target.clone();
        async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            pool.exec(&target, line, None, &CancellationToken::new(), &tx)
                .await?;
            Ok::<_, ExecError>(collect(&mut rx).stdout)
        }
    };
    // SSH_CONNECTION names the client's port: the same port means the same TCP connection.
    let a = run("echo $SSH_CONNECTION").await?;
    let b = run("echo $SSH_CONNECTION").await?;
    assert_eq!(a, b);
    assert!(r.sshd.kill_sessions() > 0);
    // The dead connection is noticed and replaced.
    let mut c = None;
    for _ in 0..50 {
        match run("echo $SSH_CONNECTION").await {
            Ok(s) => {
                c = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let c = c.ok_or_else(|| anyhow::anyhow!("no reconnect"))?;
    assert_ne!(a, c);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_remote_process_tree() -> anyhow::Result<()> {
    let r = rig(12, HostKeyPolicy::AcceptNew, true)?;
    let tag = format!("{}", 7000 + std::process::id() % 2000);
    let line = format!("sleep 86{tag} & sh -c 'sleep 87{tag}' & echo started; wait");
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let pool = r.pool.clone();
    let target = r.target.clone();
    let c2 = cancel.clone();
    let task = tokio::spawn(async move { pool.exec(&target, &line, None, &c2, &tx).await });
    // Wait until the command runs on the target.
    let mut seen = String::new();
    while !seen.contains("started") {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await? {
            Some(ExecEvent::Output { data, .. }) => seen.push_str(&data),
            Some(_) => {}
            None => anyhow::bail!("exec ended early"),
        }
    }
    assert!(!sshd::processes_matching(&format!("sleep 86{tag}")).is_empty());
    assert!(!sshd::processes_matching(&format!("sleep 87{tag}")).is_empty());
    cancel.cancel();
    let out = tokio::time::timeout(Duration::from_secs(15), task).await???;
    assert_eq!(out.end, End::Cancelled);
    assert!(out.killed, "{out:?}");
    assert!(sshd::processes_matching(&format!("sleep 86{tag}")).is_empty());
    assert!(sshd::processes_matching(&format!("sleep 87{tag}")).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_even_a_process_that_ignores_term() -> anyhow::Result<()> {
    let r = rig(13, HostKeyPolicy::AcceptNew, false)?;
    let tag = format!("{}", 3000 + std::process::id() % 2000);
    let line = format!("trap '' TERM; sleep 88{tag}; echo never");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let out = r
        .pool
        .exec(
            &r.target,
            &line,
            Some(Duration::from_millis(500)),
            &CancellationToken::new(),
            &tx,
        )
        .await?;
    assert_eq!(out.end, End::TimedOut);
    assert!(out.killed);
    assert!(!collect(&mut rx).stdout.contains("never"));
    assert!(sshd::processes_matching(&format!("sleep 88{tag}")).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_drop_mid_command_is_a_clear_error() -> anyhow::Result<()> {
    let r = rig(14, HostKeyPolicy::AcceptNew, true)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let pool = r.pool.clone();
    let target = r.target.clone();
    let task = tokio::spawn(async move {
        pool.exec(
            &target,
            "echo up; sleep 60",
            None,
            &CancellationToken::new(),
            &tx,
        )
        .await
    });
    while !matches!(rx.recv().await, Some(ExecEvent::Output { .. })) {}
    r.sshd.kill_sessions();
    let err = tokio::time::timeout(Duration::from_secs(30), task)
        .await??
        .err()
        .ok_or_else(|| anyhow::anyhow!("exec succeeded after the connection dropped"))?;
    assert!(
        err.to_string().contains("connection was lost"),
        "unexpected error: {err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_pins_then_refuses_a_changed_key() -> anyhow::Result<()> {
    let mut r = rig(15, HostKeyPolicy::AcceptNew, true)?;
    r.pool.check(&r.target).await?;
    let fp = r.sshd.host_key_fingerprint()?;
    match r.notices.try_recv()? {
        KeyNotice::Pinned { host, key } => {
            assert_eq!(host, r.target.host);
            assert_eq!(key.fingerprint, fp);
            assert_eq!(key.algorithm, "ssh-ed25519");
        }
        other => anyhow::bail!("expected a pin, got {other:?}"),
    }
    r.sshd.rotate_host_key()?;
    r.pool.evict(&r.target.host).await;
    let err = r
        .pool
        .check(&r.target)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("changed key accepted"))?;
    match &err {
        ExecError::HostKeyMismatch {
            expected,
            presented,
            ..
        } => {
            assert_eq!(expected, &fp);
            assert_eq!(presented, &r.sshd.host_key_fingerprint()?);
        }
        other => anyhow::bail!("expected a mismatch, got {other}"),
    }
    assert!(matches!(r.notices.try_recv()?, KeyNotice::Mismatch { .. }));
    // The pin is unchanged: the old key is still the trusted one.
    assert_eq!(
        r.pool
            .known_hosts()
            .get(&r.target.host)
            .map(|p| p.fingerprint),
        Some(fp)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_unpinned_and_off_accepts_anything() -> anyhow::Result<()> {
    let mut r = rig(16, HostKeyPolicy::Strict, true)?;
    let err = r
        .pool
        .check(&r.target)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("accepted"))?;
    assert!(matches!(err, ExecError::HostKeyUnknown { .. }), "{err}");
    assert!(r.notices.try_recv().is_err());
    // A person trusts the key (what `fleetctl host trust` ends in) → strict accepts it.
    r.pool.known_hosts().pin(
        &r.target.host,
        fleetbus_executor::ssh::known_hosts::Pinned {
            algorithm: "ssh-ed25519".into(),
            fingerprint: r.sshd.host_key_fingerprint()?,
        },
    )?;
    r.pool.check(&r.target).await?;
    // Off: a rotated key is accepted without pinning it.
    r.sshd.rotate_host_key()?;
    r.target.policy = HostKeyPolicy::Off;
    r.pool.check(&r.target).await?;
    assert!(r.notices.try_recv().is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_only_server_is_refused_with_a_clear_reason() -> anyhow::Result<()> {
    let sshd = Sshd::start(
        ip(17),
        SshdOptions {
            algorithms: Algorithms::LegacyOnly,
            ..SshdOptions::default()
        },
    )?;
    let key = sshd.client_key().ok_or_else(|| anyhow::anyhow!("no key"))?;
    let (tx, _rx) = mpsc::unbounded_channel();
    let pool = SshPool::new(
        SshSettings::new(&key.private),
        Arc::new(KnownHosts::in_memory()),
        tx,
    )?;
    let target = Target {
        host: HostId::new("old")?,
        address: sshd.ip().to_string(),
        port: sshd.port(),
        user: "fleet".into(),
        policy: HostKeyPolicy::Off,
    };
    let err = pool
        .check(&target)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("legacy server accepted"))?;
    let msg = err.to_string();
    assert!(matches!(err, ExecError::NoCommonAlgorithm { .. }), "{msg}");
    assert!(msg.contains("diffie-hellman-group14-sha1"), "{msg}");
    assert!(msg.contains("no CBC"), "{msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_from_the_secrets_is_tried_after_the_key() -> anyhow::Result<()> {
    let sshd = Sshd::start(
        ip(18),
        SshdOptions {
            password_auth: true,
            ..SshdOptions::default()
        },
    )?;
    let dir = tempfile::tempdir()?;
    // A key the server does not know.
    let stranger = sshd::KeyPair::generate(&dir.path().join("stranger"), "stranger")?;
    let host = HostId::new("pw")?;
    let target = Target {
        host: host.clone(),
        address: sshd.ip().to_string(),
        port: sshd.port(),
        user: "fleet".into(),
        policy: HostKeyPolicy::AcceptNew,
    };
    let (tx, _rx) = mpsc::unbounded_channel();
    let no_pw = SshPool::new(
        SshSettings::new(&stranger.private),
        Arc::new(KnownHosts::in_memory()),
        tx.clone(),
    )?;
    let err = no_pw
        .check(&target)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("unknown key accepted"))?;
    assert!(matches!(err, ExecError::Auth { .. }), "{err}");
    let mut settings = SshSettings::new(&stranger.private);
    settings
        .passwords
        .insert(host, sshd::TEST_PASSWORD.to_string());
    let with_pw = SshPool::new(settings, Arc::new(KnownHosts::in_memory()), tx)?;
    with_pw.check(&target).await?;
    // The password never shows up in the error text of a failure either.
    assert!(!err.to_string().contains(sshd::TEST_PASSWORD));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanning_reads_the_presented_key_without_logging_in() -> anyhow::Result<()> {
    let sshd = Sshd::start(ip(19), SshdOptions::default())?;
    let key = fleetbus_remote::hostkey::scan_host_key(
        &sshd.ip().to_string(),
        sshd.port(),
        Duration::from_secs(10),
    )
    .await?;
    assert_eq!(key.fingerprint, sshd.host_key_fingerprint()?);
    assert_eq!(key.algorithm, "ssh-ed25519");
    Ok(())
}
