//! A small Chrome DevTools Protocol client for headless Chromium (Debian's package): launch with
//! a fresh profile, attach to one page, navigate, evaluate JavaScript, take screenshots.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    out: mpsc::UnboundedSender<String>,
    pending: Pending,
    next: AtomicU64,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn chromium() -> PathBuf {
    std::env::var_os("FLEETBUS_CHROMIUM")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

pub fn artifacts() -> PathBuf {
    let dir = fleetbus_testkit::workspace_root()
        .join("tests")
        .join("artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

impl Browser {
    pub async fn launch() -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("fleetbus-chromium-")
            .tempdir()
            .expect("profile");
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium().display()));
        let port_file = profile.path().join("DevToolsActivePort");
        let ok = fleetbus_testkit::wait_for(
            || async {
                std::fs::read_to_string(&port_file)
                    .map(|s| s.lines().count() >= 2)
                    .unwrap_or(false)
            },
            Duration::from_secs(20),
        )
        .await;
        assert!(ok, "chromium did not open its DevTools port");
        let text = std::fs::read_to_string(&port_file).expect("port file");
        let mut lines = text.lines();
        let port = lines.next().expect("port");
        let path = lines.next().expect("path");
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}"))
            .await
            .expect("devtools websocket");
        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(Message::text(m)).await.is_err() {
                    return;
                }
            }
        });
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let p2 = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if let Some(id) = v.get("id").and_then(|i| i.as_u64()) {
                    if let Some(tx) = p2.lock().expect("lock").remove(&id) {
                        let _ = tx.send(v);
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            _profile: profile,
            out,
            pending,
            next: AtomicU64::new(1),
            session: String::new(),
        };
        let target = b
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("target id").to_owned();
        let attached = b
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        b.session = attached["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        b.cmd("Page.enable", json!({})).await;
        b.cmd("Runtime.enable", json!({})).await;
        b.cmd(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        b
    }

    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("lock").insert(id, tx);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = Value::String(s.to_owned());
        }
        self.out.send(msg.to_string()).expect("devtools writer");
        let reply = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .unwrap_or_else(|_| panic!("{method}: no reply"))
            .expect("reply");
        if let Some(err) = reply.get("error") {
            panic!("{method}: {err}");
        }
        reply["result"].clone()
    }

    pub async fn cmd(&self, method: &str, params: Value) -> Value {
        self.call(Some(&self.session.clone()), method, params).await
    }

    /// Evaluates an expression (awaiting promises) and returns its value.
    pub async fn eval(&self, js: &str) -> Value {
        let r = self
            .cmd(
                "Runtime.evaluate",
                json!({"expression": js, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("evaluate {js}: {ex}");
        }
        r["result"]["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("Page.navigate", json!({"url": url})).await;
        self.wait(
            &format!(
                "location.href.startsWith({}) && document.readyState === 'complete'",
                json!(url.split('?').next().unwrap_or(url))
            ),
            "page load",
        )
        .await;
    }

    /// Waits until a JS condition is true (polling every 100 ms, at most 15 s).
    pub async fn wait(&self, condition: &str, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let r = self
                .cmd(
                    "Runtime.evaluate",
                    json!({"expression": format!("!!({condition})"), "returnByValue": true}),
                )
                .await;
            if r["result"]["value"] == Value::Bool(true) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let body = self
                    .eval("document.body ? document.body.innerText.slice(0, 3000) : ''")
                    .await;
                panic!(
                    "timed out waiting for {what} ({condition}); page text:\n{}",
                    body.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let r = self
            .cmd(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": false}),
            )
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("png data"))
            .expect("base64");
        let path = artifacts().join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("write screenshot");
        path
    }
}

pub fn exists(p: &Path) -> bool {
    p.metadata().map(|m| m.len() > 1000).unwrap_or(false)
}
