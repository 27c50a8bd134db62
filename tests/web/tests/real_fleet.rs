//! End to end with the real executor: a real OpenSSH sshd target on 127.0.0.N with runit
//! services and scoped sudoers, the real ingest, the web service and headless Chromium. A
//! person's clicks change the real service on the target, and a batch script's output streams
//! live from the target until it is cancelled there.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::cdp::{exists, Browser};
use common::*;
use fleetbus_bus_config::Role;
use fleetbus_schemas::commands::HostCommand;
use fleetbus_schemas::events::host::{HostKeyPolicy, HostSpec};
use fleetbus_schemas::events::service::{ServiceAction, ServiceManager, ServiceSpec};
use fleetbus_schemas::events::SystemEvent;
use fleetbus_schemas::{Command, Event, UserRole};
use fleetbus_testkit::sshd::{RunitHost, Sshd, SshdOptions, SudoersFile};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_change_real_services_and_batch_output_streams_from_the_target() {
    let n = 90 + (std::process::id() % 30) as u8;
    let ip = Ipv4Addr::new(127, 0, 0, n);
    let sshd = Sshd::start(ip, SshdOptions::default()).expect("sshd");
    let runit = RunitHost::start(ip).expect("runit");
    let host_id = format!("t{n}");
    let host: fleetbus_schemas::HostId = host_id.parse().expect("host id");
    let svc = |name: &str| ServiceSpec {
        host: host.clone(),
        name: name.parse().expect("name"),
        manager: ServiceManager::Runit,
        unit: runit.service_dir(name).display().to_string(),
        actions: vec![
            ServiceAction::Status,
            ServiceAction::Start,
            ServiceAction::Stop,
            ServiceAction::Restart,
            ServiceAction::Logs,
        ],
        log_path: None,
        expected_running: true,
    };
    // The executor knows the host only from the log: registered through ingest below.
    let spec = HostSpec {
        host: host.clone(),
        address: ip.to_string(),
        port: sshd.port(),
        user: "fleet".into(),
        tags: vec!["demo".into()],
        roles: vec![],
        host_key_policy: HostKeyPolicy::AcceptNew,
        allow_adhoc: true,
        disabled: false,
    };
    let services = vec![svc("web"), svc("worker")];
    let sudoers = fleetbus_remote::sudoers::for_host(spec.host.as_str(), "fleet", &services, &[])
        .expect("sudoers");
    let _sudoers = SudoersFile::install(
        &format!("fleetbus-web-test-{n}-{}", std::process::id()),
        &sudoers,
    )
    .expect("install sudoers");

    let stack = Stack::start_without_executor().await;
    stack.add_user("ann", UserRole::Admin).await;
    stack
        .command(Command::Host(HostCommand::Add(spec.clone())))
        .await;
    for s in &services {
        stack
            .command(Command::Host(HostCommand::AddService(s.clone())))
            .await;
    }
    let hub = stack.state.hub.clone();
    let registered = fleetbus_testkit::wait_for(
        || {
            let hub = hub.clone();
            let h = spec.host.clone();
            async move { hub.read_fold(|f| f.proj.registry.services_of(&h).count() == 2) }
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(registered, "host registered through ingest");

    let mut config = fleetbus_executor::Config::demo();
    config.nats = stack.nats.nats_config(Role::Executor);
    config.state_dir = Some(stack.dir.path().join("executor"));
    config.ssh.key = sshd.client_key().map(|k| k.private.clone());
    config.ssh.kill_grace_secs = 1;
    let stop = stack.shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = fleetbus_executor::run(config, stop).await {
            eprintln!("executor stopped: {e}");
        }
    });
    let started = fleetbus_testkit::wait_for(
        || {
            let hub = hub.clone();
            async move {
                hub.since(0).0.iter().any(|e| matches!(&e.env.event, Event::System(SystemEvent::ComponentStarted { component, .. }) if component == "executor"))
            }
        },
        Duration::from_secs(20),
    )
    .await;
    assert!(started, "executor started");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    tokio::spawn(fleetbus_web::serve(
        listener,
        stack.state.clone(),
        stack.shutdown.clone(),
    ));

    let b = Browser::launch().await;
    b.goto(&format!("{base}/login")).await;
    b.eval(&format!(
        "document.querySelector('input[name=user]').value = 'ann'; document.querySelector('input[name=password]').value = {}; document.querySelector('form').submit(); true",
        json!(PASSWORD)
    ))
    .await;
    b.wait("document.querySelector('table.hosts') !== null", "overview")
        .await;
    b.goto(&format!("{base}/hosts/{host_id}")).await;
    b.wait("document.getElementById('live-status') && document.getElementById('live-status').dataset.state === 'live'", "live stream").await;

    // Read the real status: the dot turns green.
    b.eval("document.querySelector('#svc-web button[data-action=status]').click(); true")
        .await;
    b.wait(
        "document.querySelector('#svc-web .dot').classList.contains('green')",
        "web is running",
    )
    .await;
    // Stop it on the target: the dot turns red and runit agrees.
    b.eval("document.querySelector('#svc-web button[data-action=stop]').click(); true")
        .await;
    b.wait(
        "document.getElementById('fb-web').innerText.includes('job')",
        "stop feedback",
    )
    .await;
    b.wait(
        "document.querySelector('#svc-web .dot').classList.contains('red')",
        "web is stopped",
    )
    .await;
    assert!(
        runit
            .sv_status("web")
            .expect("sv status")
            .starts_with("down"),
        "runit says down"
    );
    assert!(exists(&b.screenshot("real-01-web-stopped").await));
    // Start it again.
    b.eval("document.querySelector('#svc-web button[data-action=start]').click(); true")
        .await;
    b.wait(
        "document.querySelector('#svc-web .dot').classList.contains('green')",
        "web is running again",
    )
    .await;
    assert!(
        runit
            .sv_status("web")
            .expect("sv status")
            .starts_with("run"),
        "runit says run"
    );
    assert!(exists(&b.screenshot("real-02-web-started").await));

    // A batch script streams from the target; cancel kills it there.
    b.goto(&format!("{base}/tasks")).await;
    b.eval(&format!(
        "const f = document.getElementById('batch-form'); f.script.value = 'echo hello\\nsleep 1\\necho world\\nsleep 30\\necho never'; f.hosts.value = {}; f.submit(); true",
        json!(host_id)
    ))
    .await;
    b.wait(
        "location.pathname.startsWith('/jobs/') && document.readyState === 'complete'",
        "job console",
    )
    .await;
    b.wait(
        "document.getElementById('console').innerText.includes('world')",
        "live output from the target",
    )
    .await;
    b.wait(
        r"/^STEP 4\/5$/.test(document.getElementById('job-step').innerText)",
        "STEP 4/5",
    )
    .await;
    assert!(exists(&b.screenshot("real-03-batch-live").await));
    b.eval("document.getElementById('cancel').click(); true")
        .await;
    b.wait(
        "document.getElementById('job-state').innerText === 'cancelled'",
        "cancelled",
    )
    .await;
    let text = b.eval("document.getElementById('console').innerText").await;
    assert!(text.as_str().expect("text").contains("hello"), "{text}");
    assert!(!text.as_str().expect("text").contains("never"), "{text}");
    assert!(exists(&b.screenshot("real-04-batch-cancelled").await));
}
