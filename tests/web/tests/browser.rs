//! The whole UI in headless Chromium (Debian's package, driven over the DevTools protocol):
//! log in, see the hosts, restart a service and watch its dot change, run a batch script and
//! watch live output, cancel it, time-travel the overview, the role matrix, CSRF rejection.
//! Screenshots of every page go to `tests/artifacts/`.

mod common;

use std::time::Duration;

use common::cdp::{exists, Browser};
use common::*;
use fleetbus_schemas::events::agent::ServiceState;
use fleetbus_schemas::events::service::ServiceAction::{Logs, Restart, Start, Status, Stop};
use fleetbus_schemas::UserRole;
use serde_json::json;

async fn login(b: &Browser, base: &str, user: &str) {
    b.goto(&format!("{base}/login")).await;
    b.eval(&format!(
        "document.querySelector('input[name=user]').value = {}; document.querySelector('input[name=password]').value = {}; document.querySelector('form').submit(); true",
        json!(user),
        json!(PASSWORD)
    ))
    .await;
    b.wait(
        "document.querySelector('table.hosts') !== null && document.readyState === 'complete'",
        "overview after login",
    )
    .await;
}

async fn logout(b: &Browser) {
    b.eval("document.querySelector('form.who').submit(); true")
        .await;
    b.wait(
        "location.pathname === '/login' && document.readyState === 'complete'",
        "login page after logout",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    let stack = Stack::start().await;
    stack.add_user("ann", UserRole::Admin).await;
    stack.add_user("vic", UserRole::Viewer).await;
    stack
        .add_host(
            "web-1",
            "127.0.0.2",
            &[
                ("nginx", &[Status, Start, Stop, Restart, Logs]),
                ("redis", &[Status, Restart]),
            ],
        )
        .await;
    stack
        .add_host("db-1", "127.0.0.3", &[("postgres", &[Status, Restart])])
        .await;
    stack
        .report(
            "web-1",
            &[
                ("nginx", ServiceState::Failed, Some("exited with status 1")),
                ("redis", ServiceState::Running, None),
            ],
        )
        .await;
    stack
        .report("db-1", &[("postgres", ServiceState::Running, None)])
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before_restart = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(fleetbus_web::serve(
        listener,
        stack.state.clone(),
        stack.shutdown.clone(),
    ));

    let b = Browser::launch().await;
    b.goto(&format!("{base}/")).await;
    b.wait("location.pathname === '/login'", "redirect to login")
        .await;
    assert!(exists(&b.screenshot("01-login").await));

    // Log in and see the hosts with their dots.
    login(&b, &base, "ann").await;
    let hosts = b
        .eval("[...document.querySelectorAll('tr.host-row')].map(r => r.dataset.host)")
        .await;
    assert_eq!(hosts, json!(["db-1", "web-1"]));
    let dot = b
        .eval("document.querySelector('[data-service=\"web-1:nginx\"]').className")
        .await;
    assert!(dot.as_str().unwrap().contains("red"), "{dot}");
    assert!(exists(&b.screenshot("02-overview").await));

    // Restart nginx from its panel: the feedback box names the job, the dot turns green live.
    b.goto(&format!("{base}/hosts/web-1")).await;
    b.wait("document.getElementById('live-status') && document.getElementById('live-status').dataset.state === 'live'", "live stream").await;
    let buttons = b.eval("[...document.querySelectorAll('#svc-nginx button[data-action]')].map(b => b.dataset.action)").await;
    assert_eq!(buttons, json!(["start", "stop", "restart", "status"]));
    let redis_buttons = b.eval("[...document.querySelectorAll('#svc-redis button[data-action]')].map(b => b.dataset.action)").await;
    assert_eq!(
        redis_buttons,
        json!(["restart", "status"]),
        "only allowed actions get buttons"
    );
    b.eval("document.querySelector('#svc-nginx button[data-action=restart]').click(); true")
        .await;
    b.wait(
        "document.getElementById('fb-nginx').innerText.includes('queued as job')",
        "feedback box",
    )
    .await;
    b.wait(
        "document.querySelector('#svc-nginx .dot').classList.contains('green')",
        "nginx dot turns green",
    )
    .await;
    assert!(exists(&b.screenshot("03-host-after-restart").await));

    // Logs viewer.
    b.eval("document.querySelector('#svc-nginx .logs-form select').value = '50'; document.querySelector('#svc-nginx .logs-form button').click(); true").await;
    b.wait(
        "document.getElementById('logs-nginx').innerText.includes('log line 50')",
        "logs",
    )
    .await;
    let log_lines = b
        .eval("document.querySelector('#logs-nginx pre').innerText.trim().split('\\n').length")
        .await;
    assert_eq!(log_lines, json!(50));
    let markup = b
        .eval(
            "document.querySelector('#logs-nginx pre').innerHTML.includes('&lt;b&gt;x&lt;/b&gt;')",
        )
        .await;
    assert_eq!(markup, json!(true), "log output is shown as text");

    // Back on the overview, the row changed live too.
    b.goto(&format!("{base}/")).await;
    let state = b
        .eval("document.querySelector('[data-service=\"web-1:nginx\"]').dataset.state")
        .await;
    assert_eq!(state, json!("running"));

    // Run a batch script and watch its output arrive live, then cancel it.
    *stack.executor.line_delay.lock().unwrap() = Duration::from_millis(700);
    b.goto(&format!("{base}/tasks")).await;
    b.eval("const f = document.getElementById('batch-form'); f.script.value = 'echo one\\necho two\\necho fail three\\necho four\\necho five\\necho six\\necho seven\\necho eight'; f.hosts.value = 'web-1'; f.submit(); true").await;
    b.wait(
        "location.pathname.startsWith('/jobs/') && document.readyState === 'complete'",
        "job console",
    )
    .await;
    b.wait(
        "document.getElementById('console').innerText.includes('$ echo two')",
        "live output",
    )
    .await;
    b.wait(
        r"/^STEP [0-9]+\/8$/.test(document.getElementById('job-step').innerText)",
        "progress STEP x/8",
    )
    .await;
    let colored = b
        .eval("document.querySelector('#console span.ansi-fg-32') !== null")
        .await;
    assert_eq!(colored, json!(true), "ANSI green rendered as a class");
    b.wait(
        "document.querySelector('#console span.stderr') !== null",
        "stderr chunk",
    )
    .await;
    let stderr = b
        .eval("document.querySelector('#console span.stderr').textContent")
        .await;
    assert!(
        stderr
            .as_str()
            .unwrap()
            .contains("<script>alert(1)</script>"),
        "stderr shown as text: {stderr}"
    );
    let injected = b
        .eval("document.querySelectorAll('#console script').length")
        .await;
    assert_eq!(injected, json!(0));
    assert!(exists(&b.screenshot("04-job-console-live").await));
    b.eval("document.getElementById('cancel').click(); true")
        .await;
    b.wait(
        "document.getElementById('job-state').innerText === 'cancelled'",
        "job cancelled",
    )
    .await;
    let output = b.eval("document.getElementById('console').innerText").await;
    assert!(
        !output.as_str().unwrap().contains("$ echo eight"),
        "cancel stopped the batch"
    );
    assert!(exists(&b.screenshot("05-job-cancelled").await));
    // The full output downloads from the OUTPUT stream.
    let href = b
        .eval("fetch(document.querySelector('a[download]').href).then(r => r.text())")
        .await;
    assert!(href.as_str().unwrap().contains("$ echo one"), "{href}");

    // Time travel: the overview before the restart shows nginx failed.
    let as_of = before_restart.format("%Y-%m-%dT%H:%M:%S").to_string();
    b.goto(&format!("{base}/?as_of={as_of}")).await;
    let past = b
        .eval("document.querySelector('[data-service=\"web-1:nginx\"]').dataset.state")
        .await;
    assert_eq!(past, json!("failed"));
    assert!(exists(&b.screenshot("06-time-travel").await));

    // Every other page renders.
    for (i, page) in [
        "jobs",
        "events",
        "alerts",
        "notifications",
        "schedules",
        "agents",
        "hosts",
        "users",
        "tasks",
        "manual",
    ]
    .iter()
    .enumerate()
    {
        b.goto(&format!("{base}/{page}")).await;
        let h1 = b
            .eval("document.querySelector('h1') ? document.querySelector('h1').innerText : ''")
            .await;
        assert!(!h1.as_str().unwrap().starts_with("Error"), "/{page}: {h1}");
        assert!(exists(&b.screenshot(&format!("{:02}-{page}", i + 7)).await));
    }

    // CSRF: the same post is refused without the token and accepted with it.
    let no_csrf = b
        .eval("fetch('/services/web-1/nginx/status', {method: 'POST', body: new URLSearchParams()}).then(r => r.status)")
        .await;
    assert_eq!(
        no_csrf,
        json!(403),
        "a post without the CSRF token is refused"
    );
    let with_csrf = b.eval("fetch('/services/web-1/nginx/status', {method: 'POST', body: new URLSearchParams(), headers: {'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content, 'X-Requested-With': 'fetch'}}).then(r => r.status)").await;
    assert_eq!(with_csrf, json!(200));

    // Role matrix: a viewer sees no action buttons, no logs viewer, no users page.
    logout(&b).await;
    login(&b, &base, "vic").await;
    b.goto(&format!("{base}/hosts/web-1")).await;
    let viewer_controls = b.eval("document.querySelectorAll('#svc-nginx button[data-action], #svc-nginx .logs-form').length").await;
    assert_eq!(viewer_controls, json!(0), "viewers only read");
    let users = b.eval("fetch('/users').then(r => r.status)").await;
    assert_eq!(users, json!(403));
    let restart = b.eval("fetch('/api/services/web-1:nginx/restart', {method: 'POST', headers: {'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}}).then(r => r.status)").await;
    assert_eq!(restart, json!(403), "viewer may not restart");
    assert!(exists(&b.screenshot("17-viewer-host").await));
}
