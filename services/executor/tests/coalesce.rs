//! Coalesced read-only commands (`SshPool::exec_shared`) against real OpenSSH sshd targets.
//!
//! Batches are made deterministic with `coalesce_max_parts` = the number of concurrent callers
//! and a long window: the batch runs when it is full, never because a timer fired.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use fleetbus_executor::ssh::known_hosts::KnownHosts;
use fleetbus_executor::ssh::{End, ExecEvent, ExecOutcome, SshPool, SshSettings, Target};
use fleetbus_executor::ExecError;
use fleetbus_schemas::events::host::HostKeyPolicy;
use fleetbus_schemas::events::job::OutputStream;
use fleetbus_schemas::HostId;
use fleetbus_testkit::sshd::{self, Sshd, SshdOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const LONG_WINDOW: Duration = Duration::from_secs(60);

fn target(sshd: &Sshd, id: &str) -> anyhow::Result<Target> {
    Ok(Target {
        host: HostId::new(id)?,
        address: sshd.ip().to_string(),
        port: sshd.port(),
        user: sshd.user().to_string(),
        policy: HostKeyPolicy::AcceptNew,
    })
}

fn start(n: u8) -> anyhow::Result<Sshd> {
    Ok(Sshd::start(
        Ipv4Addr::new(127, 0, 0, n),
        SshdOptions::default(),
    )?)
}

/// A pool whose batches run when `parts` commands for a host are in (or after `window`).
fn pool(sshd: &Sshd, parts: usize, window: Duration) -> anyhow::Result<SshPool> {
    let key = sshd
        .client_key()
        .ok_or_else(|| anyhow::anyhow!("no client key"))?;
    let mut settings = SshSettings::new(&key.private);
    settings.kill_grace = Duration::from_millis(500);
    settings.coalesce_max_parts = parts;
    settings.coalesce_window = window;
    let (tx, _notices) = mpsc::unbounded_channel();
    Ok(SshPool::new(
        settings,
        Arc::new(KnownHosts::in_memory()),
        tx,
    )?)
}

#[derive(Debug)]
struct Got {
    result: Result<ExecOutcome, ExecError>,
    stdout: String,
    stderr: String,
}

impl Got {
    fn code(&self) -> Option<i32> {
        self.result.as_ref().ok().and_then(|o| o.exit_code)
    }
}

fn drain(rx: &mut mpsc::UnboundedReceiver<ExecEvent>) -> (String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    while let Ok(e) = rx.try_recv() {
        if let ExecEvent::Output { stream, data } = e {
            match stream {
                OutputStream::Stdout => out.push_str(&data),
                OutputStream::Stderr => err.push_str(&data),
            }
        }
    }
    (out, err)
}

/// Runs every `(target, line)` concurrently through `exec_shared`; results in input order.
async fn shared(pool: &SshPool, calls: &[(&Target, &str)]) -> anyhow::Result<Vec<Got>> {
    let calls: Vec<_> = calls
        .iter()
        .map(|(t, line)| (*t, *line, Some(Duration::from_secs(30))))
        .collect();
    shared_with(pool, &calls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_on_one_host_share_one_exec_and_keep_their_own_results(
) -> anyhow::Result<()> {
    let sshd = start(40)?;
    let t = target(&sshd, "c40")?;
    let pool = pool(&sshd, 5, LONG_WINDOW)?;
    // `$$` in a subshell is the shell the subshell came from: the shared wrapper's pid.
    let got = shared(
        &pool,
        &[
            (&t, "echo a $$; echo a-err >&2"),
            (&t, "echo b $$; echo b-err >&2; exit 3"),
            (&t, "printf 'c %s' $$"),
            // Plain external commands (like the status templates) run without a subshell.
            (&t, "/bin/echo simple"),
            (&t, "/bin/false"),
        ],
    )
    .await?;
    assert_eq!(pool.remote_execs(), 1, "{got:#?}");
    let pid = |s: &str| s.split_whitespace().nth(1).map(str::to_string);
    let pids: Vec<_> = got[..3].iter().map(|g| pid(&g.stdout)).collect();
    assert!(pids[0].is_some(), "{got:#?}");
    assert!(pids.iter().all(|p| *p == pids[0]), "{got:#?}");
    let p = pids[0].clone().unwrap_or_default();
    assert_eq!(got[0].stdout, format!("a {p}\n"));
    assert_eq!(got[0].stderr, "a-err\n");
    assert_eq!(got[0].code(), Some(0));
    assert_eq!(got[1].stdout, format!("b {p}\n"));
    assert_eq!(got[1].stderr, "b-err\n");
    assert_eq!(got[1].code(), Some(3));
    assert_eq!(got[2].stdout, format!("c {p}"));
    assert_eq!(got[2].stderr, "");
    assert_eq!(got[2].code(), Some(0));
    assert_eq!(
        (got[3].stdout.as_str(), got[3].code()),
        ("simple\n", Some(0))
    );
    assert_eq!((got[4].stdout.as_str(), got[4].code()), ("", Some(1)));
    for g in &got {
        let o = g.result.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(o.end, End::Exited);
    }

    // Run again on the same pool: a new batch, the same connection.
    let again = shared(
        &pool,
        &[
            (&t, "echo $$"),
            (&t, "echo $$"),
            (&t, "true"),
            (&t, "true"),
            (&t, "true"),
        ],
    )
    .await?;
    // A new batch on the same pool runs in the same persistent remote shell: no new exec.
    assert_eq!(pool.remote_execs(), 1);
    assert_eq!(again[0].stdout, again[1].stdout);
    assert_eq!(again[0].stdout.trim(), p);

    // A lone request (default settings) waits out the window and runs alone.
    let lone = {
        let key = sshd.client_key().ok_or_else(|| anyhow::anyhow!("no key"))?;
        let (tx, _n) = mpsc::unbounded_channel();
        SshPool::new(
            SshSettings::new(&key.private),
            Arc::new(KnownHosts::in_memory()),
            tx,
        )?
    };
    let got = shared(&lone, &[(&t, "echo alone; exit 4")]).await?;
    assert_eq!(got[0].stdout, "alone\n");
    assert_eq!(got[0].code(), Some(4));
    assert_eq!(lone.remote_execs(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_different_hosts_are_never_merged() -> anyhow::Result<()> {
    let a = start(41)?;
    let key = a.client_key().ok_or_else(|| anyhow::anyhow!("no key"))?;
    let b = Sshd::start(
        Ipv4Addr::new(127, 0, 0, 43),
        SshdOptions {
            authorized_key: Some(key.public.clone()),
            ..SshdOptions::default()
        },
    )?;
    let ta = target(&a, "c41")?;
    let tb = target(&b, "c43")?;
    // Batches of two: if hosts were merged, the first two callers to arrive would share a shell
    // on one host and one of them would see the other host's address.
    let pool = pool(&a, 2, LONG_WINDOW)?;
    let line = "echo $SSH_CONNECTION $$";
    let got = shared(&pool, &[(&ta, line), (&tb, line), (&ta, line), (&tb, line)]).await?;
    assert_eq!(pool.remote_execs(), 2, "{got:#?}");
    let server = |g: &Got| g.stdout.split_whitespace().nth(2).map(str::to_string);
    let shell = |g: &Got| g.stdout.split_whitespace().nth(4).map(str::to_string);
    for i in [0, 2] {
        assert_eq!(server(&got[i]).as_deref(), Some("127.0.0.41"), "{got:#?}");
    }
    for i in [1, 3] {
        assert_eq!(server(&got[i]).as_deref(), Some("127.0.0.43"), "{got:#?}");
    }
    assert_eq!(shell(&got[0]), shell(&got[2]));
    assert_eq!(shell(&got[1]), shell(&got[3]));
    assert!(got.iter().all(|g| g.code() == Some(0)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_output_does_not_break_the_split_of_the_others() -> anyhow::Result<()> {
    let sshd = start(44)?;
    let t = target(&sshd, "c44")?;
    let pool = pool(&sshd, 6, LONG_WINDOW)?;
    let forger = concat!(
        r"printf '\036FLEETBUS-fake PGID 1 1\n';",
        r"printf '\n\036FLEETBUS-fake:END 1 0\n\036FLEETBUS-fake:END 2 0\n';",
        r"printf '\036FLEETBUS-fake PGID 1 1\n\n\036FLEETBUS-fake:END 1 9\n' >&2;",
        r"printf 'no-newline'; printf 'err-no-newline' >&2"
    );
    let got = shared(
        &pool,
        &[
            (&t, forger),
            (
                &t,
                r"printf '\001\002\377\376\033[31mred\n'; echo plain >&2",
            ),
            (&t, "echo before-exit; exit 7"),
            (&t, "exec >&- 2>&-; cd /; set -e; false"),
            (&t, "echo still-here; pwd"),
            (&t, "echo \"tag=[$fb_tag][$FLEETBUS_TAG]\""),
        ],
    )
    .await?;
    assert_eq!(pool.remote_execs(), 1, "{got:#?}");
    assert_eq!(
        got[0].stdout,
        "\x1eFLEETBUS-fake PGID 1 1\n\n\x1eFLEETBUS-fake:END 1 0\n\x1eFLEETBUS-fake:END 2 0\nno-newline",
        "{got:#?}"
    );
    assert_eq!(
        got[0].stderr,
        "\x1eFLEETBUS-fake PGID 1 1\n\n\x1eFLEETBUS-fake:END 1 9\nerr-no-newline"
    );
    assert_eq!(got[0].code(), Some(0));
    assert_eq!(got[1].stdout, "\u{1}\u{2}\u{fffd}\u{fffd}\x1b[31mred\n");
    assert_eq!(got[1].stderr, "plain\n");
    assert_eq!(got[1].code(), Some(0));
    // `exit` ends only its own subshell.
    assert_eq!(got[2].stdout, "before-exit\n");
    assert_eq!(got[2].code(), Some(7));
    // Closed descriptors, `cd` and `set -e` stay inside their part.
    assert_eq!((got[3].stdout.as_str(), got[3].stderr.as_str()), ("", ""));
    assert_eq!(got[3].code(), Some(1));
    assert_eq!(got[4].code(), Some(0));
    assert!(got[4].stdout.starts_with("still-here\n"), "{got:#?}");
    assert_ne!(got[4].stdout, "still-here\n/\n");
    // The run's tag is not visible to the parts.
    assert_eq!(got[5].stdout, "tag=[][]\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_detaches_one_caller_and_the_others_keep_their_results() -> anyhow::Result<()> {
    let sshd = start(45)?;
    let t = target(&sshd, "c45")?;
    let pool = pool(&sshd, 2, LONG_WINDOW)?;
    let cancel = CancellationToken::new();
    let (tx_a, mut rx_a) = mpsc::unbounded_channel();
    let a = {
        let (pool, t, cancel) = (pool.clone(), t.clone(), cancel.clone());
        tokio::spawn(async move {
            pool.exec_shared(
                &t,
                "echo a-started; sleep 1; echo a-late",
                None,
                &cancel,
                &tx_a,
            )
            .await
        })
    };
    let b = {
        let (pool, t) = (pool.clone(), t.clone());
        tokio::spawn(async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let r = pool
                .exec_shared(&t, "echo b", None, &CancellationToken::new(), &tx)
                .await;
            (r, drain(&mut rx))
        })
    };
    // Cancel A while its part runs remotely.
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rx_a.recv()).await? {
            Some(ExecEvent::Output { data, .. }) if data.contains("a-started") => break,
            Some(_) => {}
            None => anyhow::bail!("a ended before it started"),
        }
    }
    cancel.cancel();
    let a = tokio::time::timeout(Duration::from_secs(20), a).await???;
    assert_eq!(a.end, End::Cancelled);
    assert_eq!(a.exit_code, None);
    let (b, (b_out, b_err)) = tokio::time::timeout(Duration::from_secs(20), b).await??;
    let b = b?;
    assert_eq!((b.end, b.exit_code), (End::Exited, Some(0)));
    assert_eq!((b_out.as_str(), b_err.as_str()), ("b\n", ""));
    // Nothing reaches a caller after it left.
    let (late, _) = drain(&mut rx_a);
    assert!(!late.contains("a-late"), "{late}");
    assert_eq!(pool.remote_execs(), 1);

    // When every caller has left, the shared exec is killed like a cancelled plain one.
    let tag = format!("{}", 5000 + std::process::id() % 2000);
    let solo = pool_one(&sshd)?;
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = {
        let (solo, t, cancel, line) = (
            solo.clone(),
            t.clone(),
            cancel.clone(),
            format!("echo up; sleep 89{tag}"),
        );
        tokio::spawn(async move { solo.exec_shared(&t, &line, None, &cancel, &tx).await })
    };
    while !matches!(
        tokio::time::timeout(Duration::from_secs(20), rx.recv()).await?,
        Some(ExecEvent::Output { .. })
    ) {}
    // `up` is printed before the sleep is started: wait (bounded) until it runs.
    let mut running = false;
    for _ in 0..200 {
        if !sshd::processes_matching(&format!("sleep 89{tag}")).is_empty() {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running, "the remote sleep never started");
    cancel.cancel();
    let out = tokio::time::timeout(Duration::from_secs(20), task).await???;
    assert_eq!(out.end, End::Cancelled);
    let mut gone = false;
    for _ in 0..200 {
        if sshd::processes_matching(&format!("sleep 89{tag}")).is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the remote sleep outlived every caller");
    Ok(())
}

/// A pool with a zero window: every shared read runs at once, alone.
fn pool_one(sshd: &Sshd) -> anyhow::Result<SshPool> {
    pool(sshd, 32, Duration::ZERO)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_is_down_fails_every_part_with_a_clear_error() -> anyhow::Result<()> {
    let mut sshd = start(46)?;
    let t = target(&sshd, "c46")?;
    let pool = pool(&sshd, 2, LONG_WINDOW)?;

    // Dropped while the batch runs: the part running and the part waiting both fail.
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (pool, t) = (pool.clone(), t.clone());
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(async move {
                pool.exec_shared(
                    &t,
                    "echo up; sleep 60",
                    None,
                    &CancellationToken::new(),
                    &tx,
                )
                .await
            });
            (task, rx)
        })
        .collect();
    let mut rxs = Vec::new();
    let mut handles = Vec::new();
    for (task, rx) in tasks {
        handles.push(task);
        rxs.push(rx);
    }
    // Whichever part runs first prints "up".
    let mut seen = false;
    for _ in 0..400 {
        if rxs.iter_mut().any(|rx| !drain(rx).0.is_empty()) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(seen, "the batch never started");
    assert!(sshd.kill_sessions() > 0);
    for h in handles {
        let err = tokio::time::timeout(Duration::from_secs(30), h)
            .await??
            .err()
            .ok_or_else(|| anyhow::anyhow!("a part succeeded after the connection dropped"))?;
        assert!(
            err.to_string().contains("connection was lost"),
            "unexpected error: {err}"
        );
    }

    // Down before the batch runs: every part gets the connect error, no exec starts.
    sshd.stop();
    pool.evict(&t.host).await;
    let before = pool.remote_execs();
    let got = shared(&pool, &[(&t, "echo x"), (&t, "echo y")]).await?;
    for g in &got {
        match &g.result {
            Err(ExecError::Connect { addr, .. }) => {
                assert_eq!(addr, &format!("{}:{}", t.address, t.port))
            }
            other => anyhow::bail!("expected a connect error, got {other:?}"),
        }
        assert!(g.stdout.is_empty());
    }
    assert_eq!(pool.remote_execs(), before);
    Ok(())
}

/// Like [`shared`], with a per-call timeout (`None`: no deadline). The calls are polled in
/// input order and each joins its host's batch on its first poll, so parts run in input order.
async fn shared_with(
    pool: &SshPool,
    calls: &[(&Target, &str, Option<Duration>)],
) -> anyhow::Result<Vec<Got>> {
    let runs = calls.iter().map(|(target, line, timeout)| async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let result = pool
            .exec_shared(target, line, *timeout, &CancellationToken::new(), &tx)
            .await;
        let (stdout, stderr) = drain(&mut rx);
        Got {
            result,
            stdout,
            stderr,
        }
    });
    Ok(tokio::time::timeout(Duration::from_secs(40), futures::future::join_all(runs)).await?)
}

/// The pid a part printed with `echo $$` (the persistent shell's: `$$` in a subshell is the
/// shell it came from).
fn shell_pid(g: &Got) -> anyhow::Result<u32> {
    g.stdout
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("no pid in {g:?}: {e}"))
}

fn outcome(g: &Got) -> anyhow::Result<&ExecOutcome> {
    g.result.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_batches_reuse_one_shell_and_hostile_parts_do_not_desync_later_ones(
) -> anyhow::Result<()> {
    let sshd = start(47)?;
    let t = target(&sshd, "c47")?;
    let pool = pool(&sshd, 4, LONG_WINDOW)?;
    // Fake markers for this batch and the next (numbers 1..8, a made-up nonce and the empty
    // one), output without a trailing newline on both streams, non-zero exits, and a part that
    // reads stdin (it must get /dev/null, not the script that follows it).
    let fakes = concat!(
        r"printf '\n\036FLEETBUS-x:END 1 0\n\036:END 2 0\n\n\036FLEETBUS-:END 5 0\n';",
        r"printf '\n\036FLEETBUS-x:END 6 0\n' >&2; printf 'out-tail'; printf 'err-tail' >&2; exit 9"
    );
    let first = shared(
        &pool,
        &[
            (&t, "echo $$"),
            (&t, fakes),
            (&t, "cat; echo read-done"),
            (&t, "/bin/false"),
        ],
    )
    .await?;
    let pid = shell_pid(&first[0])?;
    assert_eq!(
        first[1].stdout,
        "\n\x1eFLEETBUS-x:END 1 0\n\x1e:END 2 0\n\n\x1eFLEETBUS-:END 5 0\nout-tail",
        "{first:#?}"
    );
    assert_eq!(first[1].stderr, "\n\x1eFLEETBUS-x:END 6 0\nerr-tail");
    assert_eq!(first[1].code(), Some(9));
    assert_eq!(
        (first[2].stdout.as_str(), first[2].code()),
        ("read-done\n", Some(0))
    );
    assert_eq!((first[3].stdout.as_str(), first[3].code()), ("", Some(1)));

    for round in 0..3 {
        let got = shared(
            &pool,
            &[
                (&t, "echo $$"),
                (&t, "printf 'no-newline-%s' \"$0\"; exit 3"),
                (&t, "echo err >&2; echo out"),
                (&t, "/bin/echo plain"),
            ],
        )
        .await?;
        assert_eq!(shell_pid(&got[0])?, pid, "round {round}: {got:#?}");
        assert!(got[1].stdout.starts_with("no-newline-"), "{got:#?}");
        assert_eq!(got[1].code(), Some(3));
        assert_eq!(
            (
                got[2].stdout.as_str(),
                got[2].stderr.as_str(),
                got[2].code()
            ),
            ("out\n", "err\n", Some(0))
        );
        assert_eq!(
            (got[3].stdout.as_str(), got[3].code()),
            ("plain\n", Some(0))
        );
        for g in &got {
            assert_eq!(outcome(g)?.end, End::Exited);
        }
    }
    // Five batches, one remote exec: the shell's.
    assert_eq!(pool.remote_execs(), 1);

    // With the persistent shell switched off, each batch is its own exec again.
    let key = sshd.client_key().ok_or_else(|| anyhow::anyhow!("no key"))?;
    let mut settings = SshSettings::new(&key.private);
    settings.coalesce_max_parts = 2;
    settings.coalesce_window = LONG_WINDOW;
    settings.coalesce_shell = false;
    let (tx, _n) = mpsc::unbounded_channel();
    let plain = SshPool::new(settings, Arc::new(KnownHosts::in_memory()), tx)?;
    let a = shared(&plain, &[(&t, "echo $$"), (&t, "true")]).await?;
    let b = shared(&plain, &[(&t, "echo $$"), (&t, "true")]).await?;
    assert_eq!(plain.remote_execs(), 2);
    assert_ne!(shell_pid(&a[0])?, shell_pid(&b[0])?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_killed_remotely_is_replaced_and_the_next_batch_succeeds() -> anyhow::Result<()> {
    let sshd = start(48)?;
    let t = target(&sshd, "c48")?;
    let pool = pool(&sshd, 2, LONG_WINDOW)?;
    let first = shared(&pool, &[(&t, "echo $$"), (&t, "true")]).await?;
    let pid = shell_pid(&first[0])?;

    // Killed while idle, from another session on the same host (the test's own remote shell).
    let (tx, _rx) = mpsc::unbounded_channel();
    let killer = pool
        .exec(
            &t,
            &format!("kill -9 {pid}"),
            Some(Duration::from_secs(20)),
            &CancellationToken::new(),
            &tx,
        )
        .await?;
    assert_eq!(killer.exit_code, Some(0));
    let after = shared(&pool, &[(&t, "echo $$"), (&t, "echo two; exit 2")]).await?;
    assert_ne!(shell_pid(&after[0])?, pid, "{after:#?}");
    assert_eq!(
        (after[1].stdout.as_str(), after[1].code()),
        ("two\n", Some(2))
    );

    // Killed by a part while a batch runs: parts before it keep their results, the killer gets
    // the shell's end, the part after it an error; the next batch runs on a fresh shell.
    let fresh = shared(&pool, &[(&t, "echo $$"), (&t, "true")]).await?;
    let fresh_pid = shell_pid(&fresh[0])?;
    assert_ne!(fresh_pid, pid);
    let pool3 = self::pool(&sshd, 3, LONG_WINDOW)?;
    let base = shared(&pool3, &[(&t, "echo $$"), (&t, "true"), (&t, "true")]).await?;
    let victim = shell_pid(&base[0])?;
    let got = shared(
        &pool3,
        &[(&t, "echo before"), (&t, "kill -9 $$"), (&t, "echo never")],
    )
    .await?;
    assert_eq!(
        (got[0].stdout.as_str(), got[0].code()),
        ("before\n", Some(0)),
        "{got:#?}"
    );
    let killed = outcome(&got[1])?;
    assert_eq!(killed.end, End::Exited);
    assert!(killed.exit_signal.is_some(), "{got:#?}");
    assert!(got[2].result.is_err(), "{got:#?}");
    assert_eq!(got[2].stdout, "");
    let next = shared(&pool3, &[(&t, "echo $$"), (&t, "echo ok"), (&t, "true")]).await?;
    assert_ne!(shell_pid(&next[0])?, victim);
    assert_eq!((next[1].stdout.as_str(), next[1].code()), ("ok\n", Some(0)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_part_neither_wedges_later_batches_nor_survives_its_timeout() -> anyhow::Result<()> {
    let sshd = start(49)?;
    let t = target(&sshd, "c49")?;
    let pool = pool(&sshd, 2, LONG_WINDOW)?;
    let tag = format!("{}", 5000 + std::process::id() % 2000);
    let warm = shared(&pool, &[(&t, "echo $$"), (&t, "true")]).await?;
    let pid = shell_pid(&warm[0])?;

    // A batch that hangs with no deadline: the batch after it does not wait for it. Both parts
    // hang (the tasks may join the batch in either order); the second waits behind the first,
    // and both leave with the same cancel.
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let line = format!("echo up; sleep 88{tag}");
    let spawn_hung = || {
        let (pool, t, cancel, line, tx) = (
            pool.clone(),
            t.clone(),
            cancel.clone(),
            line.clone(),
            tx.clone(),
        );
        tokio::spawn(async move { pool.exec_shared(&t, &line, None, &cancel, &tx).await })
    };
    let (hung, partner) = (spawn_hung(), spawn_hung());
    drop(tx);
    while !matches!(
        tokio::time::timeout(Duration::from_secs(20), rx.recv()).await?,
        Some(ExecEvent::Output { .. })
    ) {}
    let meanwhile = shared(&pool, &[(&t, "echo $$"), (&t, "echo meanwhile")]).await?;
    assert_eq!(meanwhile[1].stdout, "meanwhile\n");
    assert_ne!(shell_pid(&meanwhile[0])?, pid, "ran in the busy shell?");
    assert!(!hung.is_finished() && !partner.is_finished());
    // Its callers leave: the shell and the sleep are killed.
    cancel.cancel();
    for task in [hung, partner] {
        let out = tokio::time::timeout(Duration::from_secs(20), task).await???;
        assert_eq!(out.end, End::Cancelled);
    }
    wait_gone(&format!("sleep 88{tag}")).await?;

    // A batch that times out: both parts end TimedOut, the sleep is killed, and the next batch
    // runs on a fresh shell.
    let second = shared(&pool, &[(&t, "echo $$"), (&t, "true")]).await?;
    let pid2 = shell_pid(&second[0])?;
    assert_ne!(pid2, pid);
    let one = Some(Duration::from_secs(1));
    let line = format!("sleep 87{tag}");
    let got = shared_with(&pool, &[(&t, line.as_str(), one), (&t, "echo late", one)]).await?;
    for g in &got {
        assert_eq!(outcome(g)?.end, End::TimedOut, "{got:#?}");
        assert_eq!(g.stdout, "");
    }
    wait_gone(&line).await?;
    let after = shared(&pool, &[(&t, "echo $$"), (&t, "echo fine; exit 4")]).await?;
    assert_ne!(shell_pid(&after[0])?, pid2);
    assert_eq!(
        (after[1].stdout.as_str(), after[1].code()),
        ("fine\n", Some(4))
    );
    Ok(())
}

/// Waits (bounded) until no process matches `needle`.
async fn wait_gone(needle: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if sshd::processes_matching(needle).is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("`{needle}` is still running")
}
