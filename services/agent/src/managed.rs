//! Managed configuration on the agent side.
//!
//! With a `[managed]` section the agent, every round before its report:
//! 1. fetches its desired config (`GET /v1/agents/{agent}/config` with `If-None-Match`, so an
//!    unchanged config costs a 304);
//! 2. applies a new version (or any version when told to *push*): writes the TOML text to
//!    `managed.file` atomically and runs `apply_command`;
//! 3. runs `update_command` when told to update itself, and acknowledges every instruction;
//! 4. sends its live config file whenever its hash changes (`PUT …/config/live`), so the hub can
//!    show per-key drift and import it ("pull");
//! 5. reports the applied version and the SHA-256 of the live file in every report.
//!
//! `fleetbus-agent snapshot FILE` pushes a disaster-recovery snapshot; `fleetbus-agent restore`
//! fetches the recovery bundle (desired config + latest snapshot) with the retrieval passphrase.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use fleetbus_schemas::EventId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{AgentConfig, AgentError};

/// The `[managed]` section of the agent config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedSettings {
    /// The managed config file the agent writes and reports.
    pub file: PathBuf,
    /// Where the agent remembers what it applied (default: `<file>.state.json`).
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// Run after a new config was written (argv, no shell), e.g. `["systemctl", "reload", "app"]`.
    #[serde(default)]
    pub apply_command: Vec<String>,
    /// Run to update the agent; `{version}` is replaced by the target version (argv, no shell).
    #[serde(default)]
    pub update_command: Vec<String>,
    /// Files a collected snapshot carries (secrets and manifests the host needs to be rebuilt).
    #[serde(default)]
    pub snapshot_paths: Vec<PathBuf>,
}

impl ManagedSettings {
    fn state_path(&self) -> PathBuf {
        self.state_file.clone().unwrap_or_else(|| {
            let mut name = self
                .file
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default();
            name.push(".state.json");
            self.file.with_file_name(name)
        })
    }
}

/// What the agent remembers between rounds and runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedState {
    /// The desired version written last.
    pub applied_version: Option<u64>,
    /// ETag of the last fully handled config reply.
    pub etag: Option<String>,
    /// Hash and version of the live config last accepted by ingest.
    pub live_sent: Option<(String, Option<u64>)>,
    /// Instructions already carried out (with their outcome), so a lost ack is resent, not redone.
    pub done: Vec<(EventId, bool, String)>,
    /// Whether the hub said this agent is blocked.
    pub blocked: bool,
}

/// An instruction from the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructionIn {
    /// Id to acknowledge.
    pub id: EventId,
    /// `push` or `update`.
    pub instruction: String,
    /// Target version.
    pub target: String,
}

/// The hub's answer to a config fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredIn {
    /// Whether the hub holds a config for this agent.
    pub managed: bool,
    /// Desired version.
    pub version: Option<u64>,
    /// SHA-256 of `toml`.
    pub hash: Option<String>,
    /// The config text.
    pub toml: Option<String>,
    /// Pending instructions.
    #[serde(default)]
    pub instructions: Vec<InstructionIn>,
    /// The agent is blocked.
    #[serde(default)]
    pub blocked: bool,
}

/// What one sync did (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    /// The config was unchanged (304).
    pub not_modified: bool,
    /// A version was written.
    pub applied: Option<u64>,
    /// Instructions acknowledged.
    pub acked: usize,
    /// The live config was sent.
    pub live_sent: bool,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> AgentError {
    AgentError::Parse {
        what: "managed config",
        reason: format!("{}: {e}", path.display()),
    }
}

async fn load_state(settings: &ManagedSettings) -> ManagedState {
    match tokio::fs::read(settings.state_path()).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Err(_) => ManagedState::default(),
    }
}

async fn save_state(settings: &ManagedSettings, state: &ManagedState) -> Result<(), AgentError> {
    let path = settings.state_path();
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| io_err(&path, e))?;
    write_atomic(&path, &bytes, 0o600).await
}

async fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AgentError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io_err(dir, e))?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    tokio::fs::write(&tmp, bytes)
        .await
        .map_err(|e| io_err(&tmp, e))?;
    tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(|e| io_err(&tmp, e))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| io_err(path, e))
}

/// The applied version and the hash of the live file, for the report.
pub async fn report_fields(config: &AgentConfig) -> (Option<u64>, Option<String>) {
    let Some(settings) = &config.managed else {
        return (None, None);
    };
    let state = load_state(settings).await;
    let hash = tokio::fs::read(&settings.file)
        .await
        .ok()
        .map(|b| sha256_hex(&b));
    (state.applied_version, hash)
}

/// The HTTP side of managed config.
#[derive(Debug, Clone)]
pub struct ManagedClient {
    http: reqwest::Client,
    base: String,
    agent: String,
    key: Option<String>,
}

impl ManagedClient {
    /// A client for `config` (the key is read when the config has one; restore needs none).
    pub fn new(config: &AgentConfig, with_key: bool) -> Result<ManagedClient, AgentError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout())
            .build()
            .map_err(|e| AgentError::Http(e.to_string()))?;
        Ok(ManagedClient {
            http,
            base: config.ingest_url.trim_end_matches('/').to_owned(),
            agent: config.agent.to_string(),
            key: if with_key {
                Some(config.read_key()?)
            } else {
                None
            },
        })
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v1/agents/{}/{tail}", self.base, self.agent)
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    async fn check(
        resp: reqwest::Response,
        what: &'static str,
    ) -> Result<reqwest::Response, AgentError> {
        let status = resp.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or(body);
        if status.is_server_error() {
            Err(AgentError::Unavailable(format!(
                "{what}: HTTP {status}: {reason}"
            )))
        } else {
            Err(AgentError::Rejected {
                what,
                status: status.as_u16(),
                reason,
            })
        }
    }

    fn transport(e: reqwest::Error) -> AgentError {
        AgentError::Unavailable(e.to_string())
    }

    /// Fetches the desired config; `None` when unchanged since `etag`.
    pub async fn fetch(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<(DesiredIn, Option<String>)>, AgentError> {
        let mut req = self.auth(self.http.get(self.url("config")));
        if let Some(e) = etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, e);
        }
        let resp = Self::check(req.send().await.map_err(Self::transport)?, "config fetch").await?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let desired: DesiredIn = resp.json().await.map_err(|e| {
            AgentError::Unavailable(format!("config fetch: undecodable reply: {e}"))
        })?;
        Ok(Some((desired, etag)))
    }

    async fn send_live(&self, version: Option<u64>, toml: &str) -> Result<(), AgentError> {
        let req = self
            .auth(self.http.put(self.url("config/live")))
            .json(&serde_json::json!({ "version": version, "toml": toml }));
        Self::check(req.send().await.map_err(Self::transport)?, "live config").await?;
        Ok(())
    }

    async fn ack(&self, i: &InstructionIn, ok: bool, message: &str) -> Result<(), AgentError> {
        let req = self
            .auth(self.http.post(self.url("ack")))
            .json(&serde_json::json!({
                "request": i.id,
                "instruction": i.instruction,
                "ok": ok,
                "message": message.chars().take(1024).collect::<String>(),
            }));
        Self::check(
            req.send().await.map_err(Self::transport)?,
            "acknowledgement",
        )
        .await?;
        Ok(())
    }

    /// Pushes a snapshot; returns ingest's answer (object name, hash, size).
    pub async fn push_snapshot(&self, bytes: Vec<u8>) -> Result<serde_json::Value, AgentError> {
        let req = self
            .auth(self.http.post(self.url("snapshot")))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes);
        let resp = Self::check(req.send().await.map_err(Self::transport)?, "snapshot").await?;
        resp.json()
            .await
            .map_err(|e| AgentError::Unavailable(format!("snapshot: undecodable reply: {e}")))
    }

    /// Fetches the recovery bundle with the passphrase.
    pub async fn recovery(&self, passphrase: &str) -> Result<serde_json::Value, AgentError> {
        let req = self
            .http
            .get(self.url("recovery"))
            .header("x-fleetbus-passphrase", passphrase);
        let resp = Self::check(req.send().await.map_err(Self::transport)?, "recovery").await?;
        resp.json()
            .await
            .map_err(|e| AgentError::Unavailable(format!("recovery: undecodable reply: {e}")))
    }
}

async fn run_argv(argv: &[String], version: Option<&str>) -> Result<String, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("no command configured".into());
    };
    let subst = |s: &String| match version {
        Some(v) => s.replace("{version}", v),
        None => s.clone(),
    };
    let out = tokio::process::Command::new(subst(program))
        .args(args.iter().map(subst))
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text: String = text.trim().chars().take(500).collect();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{program} exited with {}: {text}", out.status))
    }
}

async fn apply(settings: &ManagedSettings, toml: &str) -> Result<(), String> {
    write_atomic(&settings.file, toml.as_bytes(), 0o644)
        .await
        .map_err(|e| e.to_string())?;
    if !settings.apply_command.is_empty() {
        run_argv(&settings.apply_command, None).await?;
    }
    Ok(())
}

/// One managed round: fetch, apply, carry out instructions, send the live config.
pub async fn sync(config: &AgentConfig, client: &ManagedClient) -> Result<SyncOutcome, AgentError> {
    let Some(settings) = &config.managed else {
        return Ok(SyncOutcome::default());
    };
    let mut state = load_state(settings).await;
    let mut outcome = SyncOutcome::default();
    match client.fetch(state.etag.as_deref()).await? {
        None => outcome.not_modified = true,
        Some((desired, etag)) if desired.blocked => {
            // Limited mode: keep reporting, but change nothing on this host until unblocked.
            if !state.blocked {
                tracing::warn!(
                    "this agent is blocked by fleetbus: not applying configs or instructions"
                );
            }
            state.blocked = true;
            state.etag = etag;
        }
        Some((desired, etag)) => {
            state.blocked = false;
            let mut all_done = true;
            let push = desired
                .instructions
                .iter()
                .find(|i| i.instruction == "push");
            if let (Some(version), Some(toml)) = (desired.version, desired.toml.as_deref()) {
                let hash_ok = desired
                    .hash
                    .as_deref()
                    .is_none_or(|h| h == sha256_hex(toml.as_bytes()));
                if !hash_ok {
                    return Err(AgentError::Unavailable(
                        "config fetch: the text does not match its hash".into(),
                    ));
                }
                let forced = push.is_some_and(|p| !state.done.iter().any(|d| d.0 == p.id));
                if state.applied_version != Some(version) || forced {
                    match apply(settings, toml).await {
                        Ok(()) => {
                            tracing::info!(version, forced, file = %settings.file.display(), "managed config applied");
                            state.applied_version = Some(version);
                            outcome.applied = Some(version);
                        }
                        Err(e) => {
                            tracing::error!(version, error = %e, "cannot apply the managed config");
                            all_done = false;
                        }
                    }
                }
            }
            for i in &desired.instructions {
                let (ok, message) = match state.done.iter().find(|d| d.0 == i.id) {
                    Some((_, ok, msg)) => (*ok, msg.clone()),
                    None => {
                        let result = match i.instruction.as_str() {
                            "push"
                                if outcome.applied.is_some() || state.applied_version.is_some() =>
                            {
                                Ok(format!(
                                    "applied version {}",
                                    state.applied_version.unwrap_or_default()
                                ))
                            }
                            "push" => Err("could not apply the desired config".to_string()),
                            "update" if settings.update_command.is_empty() => {
                                Err("no update_command is configured on this host".into())
                            }
                            "update" => run_argv(&settings.update_command, Some(&i.target))
                                .await
                                .map(|out| format!("updated to {}: {out}", i.target)),
                            other => Err(format!("unknown instruction {other:?}")),
                        };
                        let (ok, msg) = match result {
                            Ok(m) => (true, m),
                            Err(m) => (false, m),
                        };
                        tracing::info!(instruction = %i.instruction, target = %i.target, ok, "instruction carried out");
                        state.done.push((i.id, ok, msg.clone()));
                        (ok, msg)
                    }
                };
                match client.ack(i, ok, &message).await {
                    Ok(()) => outcome.acked += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "acknowledgement not delivered; will resend");
                        all_done = false;
                    }
                }
            }
            // Keep the list short: only ids still pending can come back.
            let pending: Vec<EventId> = desired.instructions.iter().map(|i| i.id).collect();
            state.done.retain(|d| pending.contains(&d.0));
            state.etag = if all_done { etag } else { None };
        }
    }
    save_state(settings, &state).await?;
    if let Ok(bytes) = tokio::fs::read(&settings.file).await {
        let hash = sha256_hex(&bytes);
        let current = Some((hash.clone(), state.applied_version));
        if state.live_sent != current {
            let text = String::from_utf8_lossy(&bytes);
            match client.send_live(state.applied_version, &text).await {
                Ok(()) => {
                    state.live_sent = current;
                    outcome.live_sent = true;
                }
                // A file the hub cannot read is reported once, not every round.
                Err(AgentError::Rejected { status, reason, .. }) => {
                    tracing::error!(status, %reason, file = %settings.file.display(), "ingest refused the live config");
                    state.live_sent = current;
                }
                Err(e) => return Err(e),
            }
            save_state(settings, &state).await?;
        }
    }
    Ok(outcome)
}

/// One entry of the asset manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetIn {
    /// Name (relative path).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 (hex).
    pub sha256: String,
}

#[derive(Debug, Deserialize)]
struct ManifestIn {
    assets: Vec<AssetIn>,
}

/// What an asset sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssetSync {
    /// Files fetched.
    pub downloaded: usize,
    /// Files already up to date.
    pub unchanged: usize,
}

/// True for a name that stays inside the asset directory.
fn safe_asset_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        && !name.chars().any(char::is_control)
}

impl ManagedClient {
    async fn manifest(&self) -> Result<Vec<AssetIn>, AgentError> {
        let req = self.auth(self.http.get(format!("{}/v1/assets", self.base)));
        let resp =
            Self::check(req.send().await.map_err(Self::transport)?, "asset manifest").await?;
        let m: ManifestIn = resp.json().await.map_err(|e| {
            AgentError::Unavailable(format!("asset manifest: undecodable reply: {e}"))
        })?;
        Ok(m.assets)
    }

    async fn asset(&self, name: &str) -> Result<Vec<u8>, AgentError> {
        let req = self.auth(self.http.get(format!("{}/v1/assets/{name}", self.base)));
        let resp = Self::check(req.send().await.map_err(Self::transport)?, "asset").await?;
        let bytes = resp.bytes().await.map_err(Self::transport)?;
        Ok(bytes.to_vec())
    }
}

/// Brings `dir` up to date with the asset manifest (files not in the manifest are left alone).
pub async fn sync_assets(client: &ManagedClient, dir: &Path) -> Result<AssetSync, AgentError> {
    let mut out = AssetSync::default();
    for asset in client.manifest().await? {
        if !safe_asset_name(&asset.name) {
            tracing::warn!(name = %asset.name, "asset name would leave the asset directory; skipped");
            continue;
        }
        let path = dir.join(&asset.name);
        if let Ok(local) = tokio::fs::read(&path).await {
            if sha256_hex(&local) == asset.sha256 {
                out.unchanged += 1;
                continue;
            }
        }
        let bytes = client.asset(&asset.name).await?;
        if sha256_hex(&bytes) != asset.sha256 {
            return Err(AgentError::Unavailable(format!(
                "asset {}: downloaded bytes do not match the manifest's SHA-256",
                asset.name
            )));
        }
        write_atomic(&path, &bytes, 0o644).await?;
        tracing::info!(name = %asset.name, size = bytes.len(), "asset downloaded");
        out.downloaded += 1;
    }
    Ok(out)
}

/// `fleetbus-agent snapshot FILE`: pushes a snapshot (`-` reads stdin).
pub async fn snapshot(
    config: AgentConfig,
    file: Option<PathBuf>,
) -> Result<serde_json::Value, AgentError> {
    let bytes = match file {
        Some(file) => read_snapshot_file(&file).await?,
        None => collect_snapshot(&config).await?,
    };
    let client = ManagedClient::new(&config, true)?;
    let reply = client.push_snapshot(bytes.clone()).await?;
    if reply.get("hash").and_then(|h| h.as_str()) != Some(sha256_hex(&bytes).as_str()) {
        return Err(AgentError::Unavailable(
            "snapshot: ingest stored a different hash".into(),
        ));
    }
    Ok(reply)
}

/// The format tag of a collected snapshot.
pub const SNAPSHOT_FORMAT: &str = "fleetbus-snapshot/1";

/// A collected snapshot: what a fresh host needs to become this agent again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotBundle {
    /// [`SNAPSHOT_FORMAT`].
    pub format: String,
    /// The agent.
    pub agent: String,
    /// Its host.
    pub host: String,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// Mounted file systems (`/proc/mounts`).
    pub mounts: String,
    /// Files by absolute path, base64.
    pub files: std::collections::BTreeMap<String, String>,
}

/// Collects the managed file, the disk layout and every `snapshot_paths` file into a bundle.
pub async fn collect_snapshot(config: &AgentConfig) -> Result<Vec<u8>, AgentError> {
    let settings = config.managed.as_ref().ok_or_else(|| {
        AgentError::Usage("a collected snapshot needs a [managed] section; or pass a FILE".into())
    })?;
    let mut files = std::collections::BTreeMap::new();
    let paths = std::iter::once(&settings.file).chain(&settings.snapshot_paths);
    for path in paths {
        match tokio::fs::read(path).await {
            Ok(b) => {
                files.insert(
                    path.display().to_string(),
                    base64::engine::general_purpose::STANDARD.encode(b),
                );
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "snapshot path not readable; left out")
            }
        }
    }
    let mounts = tokio::fs::read_to_string(config.proc_root.join("mounts"))
        .await
        .unwrap_or_default();
    let bundle = SnapshotBundle {
        format: SNAPSHOT_FORMAT.into(),
        agent: config.agent.to_string(),
        host: config.host.to_string(),
        time: chrono::Utc::now().to_rfc3339(),
        mounts,
        files,
    };
    serde_json::to_vec_pretty(&bundle)
        .map_err(|e| AgentError::Usage(format!("cannot encode the snapshot: {e}")))
}

/// Writes the files of a collected snapshot under `root` (`/etc/x` → `<root>/etc/x`, mode 0600).
pub async fn unpack_snapshot(bytes: &[u8], root: &Path) -> Result<Vec<PathBuf>, AgentError> {
    let bundle: SnapshotBundle = serde_json::from_slice(bytes)
        .ok()
        .filter(|b: &SnapshotBundle| b.format == SNAPSHOT_FORMAT)
        .ok_or_else(|| {
            AgentError::Usage(
                "the snapshot is not a collected fleetbus snapshot; it was written as is".into(),
            )
        })?;
    let mut written = Vec::new();
    for (path, data) in &bundle.files {
        let rel = Path::new(path.trim_start_matches('/'));
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            tracing::warn!(%path, "snapshot path would leave the target; skipped");
            continue;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| AgentError::Usage(format!("snapshot file {path}: not base64: {e}")))?;
        let target = root.join(rel);
        write_atomic(&target, &bytes, 0o600).await?;
        written.push(target);
    }
    Ok(written)
}

async fn read_snapshot_file(file: &Path) -> Result<Vec<u8>, AgentError> {
    let bytes = if file == Path::new("-") {
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut buf)
            .await
            .map_err(|e| io_err(file, e))?;
        buf
    } else {
        tokio::fs::read(file).await.map_err(|e| io_err(file, e))?
    };
    Ok(bytes)
}

/// What `restore` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The config file written, with its version.
    pub config: Option<(PathBuf, u64)>,
    /// The snapshot file written, with its SHA-256.
    pub snapshot: Option<(PathBuf, String)>,
}

/// `fleetbus-agent restore`: fetches the recovery bundle with the passphrase, writes the desired
/// config to `managed.file` and the latest snapshot to `snapshot_out` (mode 0600), after
/// checking its SHA-256.
pub async fn restore(
    config: AgentConfig,
    passphrase: &str,
    snapshot_out: PathBuf,
) -> Result<Restored, AgentError> {
    let client = ManagedClient::new(&config, false)?;
    let bundle = client.recovery(passphrase).await?;
    let mut restored = Restored {
        config: None,
        snapshot: None,
    };
    if let (Some(toml), Some(version)) = (
        bundle.get("toml").and_then(|t| t.as_str()),
        bundle.get("version").and_then(serde_json::Value::as_u64),
    ) {
        match &config.managed {
            Some(settings) => {
                write_atomic(&settings.file, toml.as_bytes(), 0o644).await?;
                let state = ManagedState {
                    applied_version: Some(version),
                    ..ManagedState::default()
                };
                save_state(settings, &state).await?;
                restored.config = Some((settings.file.clone(), version));
            }
            None => tracing::warn!(
                "the bundle holds a config but this agent has no [managed] file to write it to"
            ),
        }
    }
    if let Some(snap) = bundle.get("snapshot").filter(|s| !s.is_null()) {
        let data = snap
            .get("data")
            .and_then(|d| d.as_str())
            .unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| {
                AgentError::Unavailable(format!("recovery: snapshot is not base64: {e}"))
            })?;
        let hash = sha256_hex(&bytes);
        if snap.get("hash").and_then(|h| h.as_str()) != Some(hash.as_str()) {
            return Err(AgentError::Unavailable(
                "recovery: the snapshot does not match its hash".into(),
            ));
        }
        write_atomic(&snapshot_out, &bytes, 0o600).await?;
        restored.snapshot = Some((snapshot_out, hash));
    }
    Ok(restored)
}

/// Extra `fleetbus-agent` verbs for managed agents.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ManagedCmd {
    /// Push a disaster-recovery snapshot (a file, or `-` for stdin); stored encrypted by fleetbus.
    Snapshot {
        /// The snapshot file; without it, the agent collects one: the managed file, the
        /// `snapshot_paths` files and the disk layout.
        file: Option<PathBuf>,
    },
    /// Rebuild this host's agent state from fleetbus: desired config + latest snapshot.
    Restore {
        /// The retrieval passphrase (words; spacing and case do not matter). Prefer
        /// `FLEETBUS_PASSPHRASE` so it stays out of the process list.
        #[arg(long, env = "FLEETBUS_PASSPHRASE", hide_env_values = true)]
        passphrase: String,
        /// Where to write the snapshot (mode 0600).
        #[arg(long, default_value = "snapshot.restored")]
        snapshot_out: PathBuf,
        /// Also write the files of a collected snapshot under this directory (`/` puts them
        /// back in place).
        #[arg(long)]
        unpack_to: Option<PathBuf>,
    },
    /// Download the fleet's assets into a directory: only files whose SHA-256 differs from the
    /// manifest are fetched, each checked and written atomically.
    Assets {
        /// The directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Runs a managed verb, printing what it did.
pub async fn run_cmd(config: AgentConfig, cmd: ManagedCmd) -> Result<(), AgentError> {
    match cmd {
        ManagedCmd::Assets { dir } => {
            let client = ManagedClient::new(&config, true)?;
            let r = sync_assets(&client, &dir).await?;
            println!(
                "{} assets: {} downloaded, {} unchanged",
                r.downloaded + r.unchanged,
                r.downloaded,
                r.unchanged
            );
            Ok(())
        }
        ManagedCmd::Snapshot { file } => {
            let reply = snapshot(config, file).await?;
            println!(
                "snapshot stored as {} ({} bytes, sha256 {})",
                reply.get("object").and_then(|v| v.as_str()).unwrap_or("-"),
                reply
                    .get("size")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
                reply.get("hash").and_then(|v| v.as_str()).unwrap_or("-"),
            );
            Ok(())
        }
        ManagedCmd::Restore {
            passphrase,
            snapshot_out,
            unpack_to,
        } => {
            let r = restore(config, &passphrase, snapshot_out).await?;
            if let (Some(root), Some((path, _))) = (&unpack_to, &r.snapshot) {
                let bytes = tokio::fs::read(path).await.map_err(|e| io_err(path, e))?;
                for f in unpack_snapshot(&bytes, root).await? {
                    println!("restored {}", f.display());
                }
            }
            match &r.config {
                Some((path, v)) => println!("config version {v} written to {}", path.display()),
                None => println!("no managed config in the bundle"),
            }
            match &r.snapshot {
                Some((path, hash)) => {
                    println!("snapshot written to {} (sha256 {hash})", path.display())
                }
                None => println!("no snapshot in the bundle"),
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_sits_next_to_the_managed_file_by_default() {
        let s = ManagedSettings {
            file: PathBuf::from("/etc/app/app.toml"),
            state_file: None,
            apply_command: vec![],
            update_command: vec![],
            snapshot_paths: vec![],
        };
        assert_eq!(
            s.state_path(),
            PathBuf::from("/etc/app/app.toml.state.json")
        );
    }

    #[test]
    fn asset_names_cannot_escape_the_directory() {
        assert!(safe_asset_name("brand/logo.png"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a"] {
            assert!(!safe_asset_name(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn unpacking_a_snapshot_never_writes_outside_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let bundle = SnapshotBundle {
            format: SNAPSHOT_FORMAT.into(),
            agent: "web-1".into(),
            host: "web-1".into(),
            time: String::new(),
            mounts: String::new(),
            files: [
                ("/etc/app/secret.env".to_string(), b64("s=1")),
                ("/etc/../../escape".to_string(), b64("x")),
            ]
            .into_iter()
            .collect(),
        };
        let bytes = serde_json::to_vec(&bundle).unwrap();
        let root = dir.path().join("root");
        let written = unpack_snapshot(&bytes, &root).await.unwrap();
        assert_eq!(written, vec![root.join("etc/app/secret.env")]);
        assert_eq!(std::fs::read_to_string(&written[0]).unwrap(), "s=1");
        assert!(!dir.path().join("escape").exists());
        assert!(unpack_snapshot(b"raw bytes", &root).await.is_err());
    }

    #[tokio::test]
    async fn commands_run_without_a_shell_with_the_version_substituted() {
        let argv = vec!["echo".to_string(), "to {version}; rm -rf /".to_string()];
        let out = run_argv(&argv, Some("1.2.3")).await.unwrap();
        assert_eq!(out, "to 1.2.3; rm -rf /");
        let err = run_argv(&["false".to_string()], None).await.unwrap_err();
        assert!(err.contains("exited"), "{err}");
        assert!(run_argv(&[], None).await.is_err());
    }
}
