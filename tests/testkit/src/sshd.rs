//! Real OpenSSH `sshd` targets on loopback addresses, a runit service fixture and scoped sudoers
//! files — the remote side of the executor's tests, the demo fleet and the fan-out benchmark.
//!
//! Every target is a separate `/usr/sbin/sshd -D -e -f <conf>` process bound to `127.0.0.N` on a
//! free port, with its own ed25519 host key in a temp dir and the shared unix login user `fleet`
//! (shell `/bin/sh`, created idempotently; tests run as root). Everything is killed or removed on
//! `Drop`, so a failing test leaves no sshd, runsvdir or sudoers file behind.

use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The shared unix login user of every test target.
pub const LOGIN_USER: &str = "fleet";

/// The password set on [`LOGIN_USER`] by [`ensure_login_user`]; only accepted by targets started
/// with [`SshdOptions::password_auth`].
pub const TEST_PASSWORD: &str = "fleetbus-test-only-password";

const SSHD: &str = "/usr/sbin/sshd";
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong while starting or controlling a fixture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshdError {
    /// A helper program could not be run or exited non-zero.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The program and its first arguments.
        command: String,
        /// Exit status and stderr, or the spawn error.
        detail: String,
    },
    /// A file under the fixture's temp dir could not be written or read.
    #[error("{what} ({path}): {source}")]
    Io {
        /// What the file is for.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// sshd (or a service) did not start listening in time.
    #[error("{what} did not become ready within {timeout:?}; log: {log}")]
    NotReady {
        /// Which process.
        what: String,
        /// How long we waited.
        timeout: Duration,
        /// The tail of its log.
        log: String,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SshdError + 'a {
    move |source| SshdError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Runs a program to completion and returns its stdout; a non-zero exit is an error.
fn run(program: &str, args: &[&str]) -> Result<String, SshdError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| SshdError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(SshdError::Command {
            command,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the shared login user `fleet` (shell `/bin/sh`, home `/home/fleet`) if it is missing,
/// and sets [`TEST_PASSWORD`] once per process, so the account is not locked (sshd refuses locked
/// accounts when `UsePAM no`). Also makes sure `/run/sshd` (sshd's privilege-separation dir)
/// exists. Idempotent and safe to call from parallel tests.
pub fn ensure_login_user() -> Result<(), SshdError> {
    static DONE: OnceLock<Mutex<bool>> = OnceLock::new();
    let lock = DONE.get_or_init(|| Mutex::new(false));
    let mut done = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if *done {
        return Ok(());
    }
    let run_sshd = Path::new("/run/sshd");
    if !run_sshd.is_dir() {
        fs::create_dir_all(run_sshd).map_err(io_err("sshd privsep dir", run_sshd))?;
        fs::set_permissions(run_sshd, fs::Permissions::from_mode(0o755))
            .map_err(io_err("sshd privsep dir", run_sshd))?;
    }
    if run("id", &["-u", LOGIN_USER]).is_err() {
        // Another process (a parallel test binary, the demo fleet) may create it at the same time.
        if let Err(e) = run("useradd", &["-m", "-s", "/bin/sh", LOGIN_USER]) {
            if run("id", &["-u", LOGIN_USER]).is_err() {
                return Err(e);
            }
        }
    }
    // chpasswd takes a lock on /etc/shadow; another process holding it makes this fail briefly.
    let mut last = None;
    for _ in 0..20 {
        match chpasswd() {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    if let Some(e) = last {
        return Err(e);
    }
    *done = true;
    Ok(())
}

fn chpasswd() -> Result<(), SshdError> {
    let command = "chpasswd".to_string();
    let mut child = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SshdError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{LOGIN_USER}:{TEST_PASSWORD}");
    }
    let out = child.wait_with_output().map_err(|e| SshdError::Command {
        command: command.clone(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SshdError::Command {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// An ed25519 key pair made by `ssh-keygen` (OpenSSH private key format, no passphrase).
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The private key file (mode 0600).
    pub private: PathBuf,
    /// The public key file (`<private>.pub`).
    pub public: PathBuf,
}

impl KeyPair {
    /// Generates a new ed25519 key at `path` (and `path.pub`), replacing any old one.
    pub fn generate(path: &Path, comment: &str) -> Result<KeyPair, SshdError> {
        let _ = fs::remove_file(path);
        let public = path.with_extension("pub");
        let _ = fs::remove_file(&public);
        let path_str = path.to_string_lossy();
        run(
            "ssh-keygen",
            &[
                "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", &path_str,
            ],
        )?;
        Ok(KeyPair {
            private: path.to_path_buf(),
            public: PathBuf::from(format!("{path_str}.pub")),
        })
    }

    /// The public key line (`ssh-ed25519 AAAA… comment`).
    pub fn public_line(&self) -> Result<String, SshdError> {
        fs::read_to_string(&self.public)
            .map(|s| s.trim().to_string())
            .map_err(io_err("public key", &self.public))
    }

    /// The `SHA256:…` fingerprint of the public key, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> Result<String, SshdError> {
        fingerprint_of(&self.public)
    }
}

/// The `SHA256:…` fingerprint of a public key file.
pub fn fingerprint_of(public: &Path) -> Result<String, SshdError> {
    let out = run("ssh-keygen", &["-lf", &public.to_string_lossy()])?;
    out.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| SshdError::Command {
            command: "ssh-keygen -lf".into(),
            detail: format!("unexpected output {out:?}"),
        })
}

/// Which algorithms the target offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Algorithms {
    /// OpenSSH's defaults (ed25519 host key).
    #[default]
    Modern,
    /// Only legacy algorithms: an `ssh-rsa` (SHA-1) host key, `diffie-hellman-group14-sha1`,
    /// `aes128-cbc`, `hmac-sha1` — a server a modern-only client must refuse.
    LegacyOnly,
}

/// How to start a target.
#[derive(Debug, Clone)]
pub struct SshdOptions {
    /// Algorithms offered.
    pub algorithms: Algorithms,
    /// Accept password authentication (with [`TEST_PASSWORD`]).
    pub password_auth: bool,
    /// Authorize this public key file instead of generating a client key for the target.
    pub authorized_key: Option<PathBuf>,
    /// Port to bind; `None` picks a free one.
    pub port: Option<u16>,
    /// Where to keep the host key, config and log; `None` uses a temp dir removed on drop.
    pub dir: Option<PathBuf>,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions {
            algorithms: Algorithms::Modern,
            password_auth: false,
            authorized_key: None,
            port: None,
            dir: None,
        }
    }
}

enum Dir {
    Temp(TempDir),
    Kept(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Kept(p) => p,
        }
    }
}

/// A running OpenSSH sshd on `127.0.0.N:port`. Killed on drop.
pub struct Sshd {
    ip: Ipv4Addr,
    port: u16,
    dir: Dir,
    opts: SshdOptions,
    client_key: Option<KeyPair>,
    authorized_key: PathBuf,
    child: Option<Child>,
}

impl std::fmt::Debug for Sshd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sshd")
            .field("addr", &self.addr())
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// Picks a port that is free on `ip` right now.
pub fn free_port(ip: Ipv4Addr) -> Result<u16, SshdError> {
    let addr = SocketAddrV4::new(ip, 0);
    let listener = TcpListener::bind(addr).map_err(|e| SshdError::Command {
        command: format!("bind {addr}"),
        detail: e.to_string(),
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| SshdError::Command {
            command: format!("local_addr {addr}"),
            detail: e.to_string(),
        })
}

impl Sshd {
    /// Starts a target on `ip` (use `127.0.0.N`, N ≥ 2) and waits until it accepts connections.
    pub fn start(ip: Ipv4Addr, opts: SshdOptions) -> Result<Sshd, SshdError> {
        ensure_login_user()?;
        let dir = match &opts.dir {
            Some(p) => {
                fs::create_dir_all(p).map_err(io_err("sshd dir", p))?;
                Dir::Kept(p.clone())
            }
            None => Dir::Temp(
                tempfile::Builder::new()
                    .prefix("fleetbus-sshd-")
                    .tempdir()
                    .map_err(io_err("sshd temp dir", Path::new("/tmp")))?,
            ),
        };
        // sshd reads AuthorizedKeysFile as the login user: the dir must be traversable.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .map_err(io_err("sshd dir", dir.path()))?;
        let port = match opts.port {
            Some(p) => p,
            None => free_port(ip)?,
        };
        let (client_key, authorized_key) = match &opts.authorized_key {
            Some(p) => (None, p.clone()),
            None => {
                let k =
                    KeyPair::generate(&dir.path().join("client_ed25519"), "fleetbus-test-client")?;
                let public = k.public.clone();
                (Some(k), public)
            }
        };
        let mut sshd = Sshd {
            ip,
            port,
            dir,
            opts,
            client_key,
            authorized_key,
            child: None,
        };
        sshd.write_host_key()?;
        sshd.write_config()?;
        sshd.spawn()?;
        Ok(sshd)
    }

    /// The address sshd listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip, self.port))
    }

    /// The loopback IP.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user (`fleet`).
    pub fn user(&self) -> &'static str {
        LOGIN_USER
    }

    /// The dir holding the host key, config and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client private key generated for this target (`None` when an authorized key was given).
    pub fn client_key(&self) -> Option<&KeyPair> {
        self.client_key.as_ref()
    }

    /// The host's public key file.
    pub fn host_key_public(&self) -> PathBuf {
        self.host_key_path().with_extension("pub")
    }

    /// The host key's public line (`ssh-ed25519 AAAA…`).
    pub fn host_key_line(&self) -> Result<String, SshdError> {
        let p = self.host_key_public();
        fs::read_to_string(&p)
            .map(|s| s.trim().to_string())
            .map_err(io_err("host public key", &p))
    }

    /// The host key's `SHA256:…` fingerprint.
    pub fn host_key_fingerprint(&self) -> Result<String, SshdError> {
        fingerprint_of(&self.host_key_public())
    }

    /// sshd's own log (stderr of `-D -e`), for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Replaces the host key with a new one and restarts sshd on the same port: what a
    /// reinstalled (or impersonated) host looks like to a client that pinned the old key.
    pub fn rotate_host_key(&mut self) -> Result<(), SshdError> {
        self.kill();
        self.write_host_key()?;
        self.spawn()
    }

    /// Stops sshd (connections drop); [`Sshd::restart`] brings it back with the same key.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts sshd again after [`Sshd::stop`].
    pub fn restart(&mut self) -> Result<(), SshdError> {
        self.kill();
        self.spawn()
    }

    /// Kills (SIGKILL) every process descended from the listening sshd — the per-connection sshd
    /// processes and the commands they run — while the listener stays up: a dropped connection
    /// as the client sees it.
    pub fn kill_sessions(&self) -> usize {
        let Some(root) = self.pid() else { return 0 };
        let victims = descendants(root);
        for pid in &victims {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        victims.len()
    }

    /// The pid of the listening sshd, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn host_key_path(&self) -> PathBuf {
        match self.opts.algorithms {
            Algorithms::Modern => self.dir.path().join("ssh_host_ed25519_key"),
            Algorithms::LegacyOnly => self.dir.path().join("ssh_host_rsa_key"),
        }
    }

    fn write_host_key(&self) -> Result<(), SshdError> {
        let path = self.host_key_path();
        let _ = fs::remove_file(&path);
        let _ = fs::remove_file(path.with_extension("pub"));
        let p = path.to_string_lossy();
        let comment = format!("fleetbus-test-host-{}", self.ip);
        match self.opts.algorithms {
            Algorithms::Modern => run(
                "ssh-keygen",
                &["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f", &p],
            )?,
            Algorithms::LegacyOnly => run(
                "ssh-keygen",
                &[
                    "-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", &comment, "-f", &p,
                ],
            )?,
        };
        Ok(())
    }

    fn authorized_keys_path(&self) -> PathBuf {
        self.dir.path().join("authorized_keys")
    }

    fn write_config(&self) -> Result<(), SshdError> {
        let ak = self.authorized_keys_path();
        let key_file = &self.authorized_key;
        let line = fs::read_to_string(key_file).map_err(io_err("authorized key", key_file))?;
        fs::write(&ak, line).map_err(io_err("authorized_keys", &ak))?;
        fs::set_permissions(&ak, fs::Permissions::from_mode(0o644))
            .map_err(io_err("authorized_keys", &ak))?;

        let dir = self.dir.path();
        let mut conf = format!(
            "ListenAddress {ip}:{port}\n\
             HostKey {host_key}\n\
             PidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {ak}\n\
             AllowUsers {user}\n\
             PermitRootLogin no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication {pw}\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             UseDNS no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             X11Forwarding no\n\
             AllowTcpForwarding no\n\
             MaxStartups 200:30:400\n\
             MaxSessions 100\n\
             LoginGraceTime 20\n\
             ClientAliveInterval 0\n\
             LogLevel VERBOSE\n\
             Subsystem sftp internal-sftp\n",
            ip = self.ip,
            port = self.port,
            host_key = self.host_key_path().display(),
            dir = dir.display(),
            ak = ak.display(),
            user = LOGIN_USER,
            pw = if self.opts.password_auth { "yes" } else { "no" },
        );
        if self.opts.algorithms == Algorithms::LegacyOnly {
            conf.push_str(
                "HostKeyAlgorithms ssh-rsa\n\
                 PubkeyAcceptedAlgorithms +ssh-rsa\n\
                 KexAlgorithms diffie-hellman-group14-sha1\n\
                 Ciphers aes128-cbc\n\
                 MACs hmac-sha1\n",
            );
        }
        let path = dir.join("sshd_config");
        fs::write(&path, conf).map_err(io_err("sshd_config", &path))?;
        // Fail early, with sshd's own words, on a config it would not run.
        run(SSHD, &["-t", "-f", &path.to_string_lossy()])?;
        Ok(())
    }

    fn spawn(&mut self) -> Result<(), SshdError> {
        let dir = self.dir.path().to_path_buf();
        let log_path = dir.join("sshd.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err("sshd log", &log_path))?;
        let conf = dir.join("sshd_config");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: a test's Ctrl-C does not race our drop.
            .process_group(0)
            .spawn()
            .map_err(|e| SshdError::Command {
                command: format!("{SSHD} -D -e -f {}", conf.display()),
                detail: e.to_string(),
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || Instant::now() > deadline {
                self.kill();
                return Err(SshdError::NotReady {
                    what: format!("sshd on {}", self.addr()),
                    timeout: READY_TIMEOUT,
                    log: tail(&self.log(), 2000),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM lets sshd remove its pid file; the listener dies at once either way.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }
}

/// The pids of every process whose parent chain leads to `root` (from `/proc/*/stat`).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // The command name is in parentheses and may contain spaces: parse after the last ')'.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = after
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok())
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// Live processes (not zombies) whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let zombie = fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| {
                    s.rfind(')')
                        .map(|i| s[i + 1..].trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if !zombie && cmdline.contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

fn tail(s: &str, n: usize) -> String {
    let start = s.len().saturating_sub(n);
    let mut i = start;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    s[i..].to_string()
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The services of a runit fixture host.
pub const RUNIT_SERVICES: [&str; 3] = ["web", "worker", "flaky"];

/// A runit service tree for one host: `runsvdir` over `<root>/sv` with real services
/// (`web`: python's http.server on the host's IP, `worker`: writes a log line every second through
/// `svlogd`, `flaky`: runs a few seconds then exits 1, so runit restarts it now and then).
/// Services are addressed by absolute path (`sv status <root>/sv/web`), so no `SVDIR` is needed.
/// Stopped (`sv force-shutdown` + runsvdir killed) on drop.
pub struct RunitHost {
    root: PathBuf,
    _temp: Option<TempDir>,
    web_port: u16,
    child: Option<Child>,
}

impl std::fmt::Debug for RunitHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunitHost")
            .field("root", &self.root)
            .finish()
    }
}

impl RunitHost {
    /// Starts a service tree in a fresh temp dir; `web` listens on `ip`.
    pub fn start(ip: Ipv4Addr) -> Result<RunitHost, SshdError> {
        let temp = tempfile::Builder::new()
            .prefix("fleetbus-runit-")
            .tempdir()
            .map_err(io_err("runit temp dir", Path::new("/tmp")))?;
        let root = temp.path().to_path_buf();
        let mut host = RunitHost::start_in(&root, ip)?;
        host._temp = Some(temp);
        Ok(host)
    }

    /// Starts a service tree under `root` (kept on drop; the demo fleet uses this).
    pub fn start_in(root: &Path, ip: Ipv4Addr) -> Result<RunitHost, SshdError> {
        ensure_login_user()?;
        fs::create_dir_all(root).map_err(io_err("runit root", root))?;
        // The login user reads service logs without sudo.
        fs::set_permissions(root, fs::Permissions::from_mode(0o755))
            .map_err(io_err("runit root", root))?;
        let web_port = free_port(ip)?;
        let sv = root.join("sv");
        let scripts = [
            (
                "web",
                format!("#!/bin/sh\nexec 2>&1\nexec /usr/bin/python3 -m http.server {web_port} --bind {ip} --directory {root}\n", root = root.display()),
            ),
            (
                "worker",
                "#!/bin/sh\nexec 2>&1\nn=0\nwhile :; do n=$((n+1)); echo \"worker tick $n\"; sleep 1; done\n".to_string(),
            ),
            (
                "flaky",
                "#!/bin/sh\nexec 2>&1\necho 'flaky: starting'\nsleep 7\necho 'flaky: giving up' \nexit 1\n".to_string(),
            ),
        ];
        for (name, run_script) in &scripts {
            let dir = sv.join(name);
            let log_dir = dir.join("log");
            let main = log_dir.join("main");
            fs::create_dir_all(&main).map_err(io_err("service log dir", &main))?;
            for d in [&sv, &dir, &log_dir, &main] {
                fs::set_permissions(d, fs::Permissions::from_mode(0o755))
                    .map_err(io_err("service dir", d))?;
            }
            write_exec(&dir.join("run"), run_script)?;
            write_exec(
                &log_dir.join("run"),
                "#!/bin/sh\numask 022\nexec svlogd -tt ./main\n",
            )?;
        }
        let log_path = root.join("runsvdir.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err("runsvdir log", &log_path))?;
        let child = Command::new("runsvdir")
            .arg("-P")
            .arg(&sv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err("runsvdir log", &log_path))?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| SshdError::Command {
                command: format!("runsvdir -P {}", sv.display()),
                detail: e.to_string(),
            })?;
        let host = RunitHost {
            root: root.to_path_buf(),
            _temp: None,
            web_port,
            child: Some(child),
        };
        // Ready when runsv answers for every service and web accepts connections.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let all_up = RUNIT_SERVICES.iter().all(|s| {
                run("sv", &["status", &host.service_dir(s).to_string_lossy()])
                    .map(|o| o.starts_with("run:") || o.starts_with("down:"))
                    .unwrap_or(false)
            });
            let web_ok = TcpStream::connect_timeout(
                &SocketAddr::V4(SocketAddrV4::new(ip, web_port)),
                Duration::from_millis(200),
            )
            .is_ok();
            if all_up && web_ok {
                return Ok(host);
            }
            if Instant::now() > deadline {
                return Err(SshdError::NotReady {
                    what: format!("runsvdir over {}", sv.display()),
                    timeout: READY_TIMEOUT,
                    log: tail(&fs::read_to_string(&log_path).unwrap_or_default(), 2000),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The root of the tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute service dir (`<root>/sv/<name>`) — what `sv` is given.
    pub fn service_dir(&self, name: &str) -> PathBuf {
        self.root.join("sv").join(name)
    }

    /// The file svlogd writes the service's current log to.
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.service_dir(name).join("log/main/current")
    }

    /// The port the `web` service listens on.
    pub fn web_port(&self) -> u16 {
        self.web_port
    }

    /// `sv status <dir>` run locally as root, for asserting on real state.
    pub fn sv_status(&self, name: &str) -> Result<String, SshdError> {
        run("sv", &["status", &self.service_dir(name).to_string_lossy()])
    }

    /// Runs an `sv` command locally as root (`sv up`, `sv down`, …) to set up a state.
    pub fn sv(&self, verb: &str, name: &str) -> Result<String, SshdError> {
        run("sv", &[verb, &self.service_dir(name).to_string_lossy()])
    }

    /// Stops the services and runsvdir.
    pub fn shutdown(&mut self) {
        let dirs: Vec<String> = RUNIT_SERVICES
            .iter()
            .map(|s| self.service_dir(s).to_string_lossy().into_owned())
            .collect();
        let mut args = vec!["-w", "3", "force-shutdown"];
        args.extend(dirs.iter().map(String::as_str));
        let _ = run("sv", &args);
        // Then runsvdir itself, by pid only (never a negative pid through /usr/bin/kill: procps
        // reads `-N` as an option and the signal can reach every process on the machine).
        // SIGHUP, not SIGKILL: runsvdir then TERMs each runsv, which stops its service and log
        // and exits — a SIGKILLed runsvdir leaves any runsv that `force-shutdown` missed running.
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-HUP")
                .arg(child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            for _ in 0..50 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RunitHost {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn write_exec(path: &Path, content: &str) -> Result<(), SshdError> {
    fs::write(path, content).map_err(io_err("run script", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(io_err("run script", path))
}

/// A sudoers drop-in under `/etc/sudoers.d/`, checked with `visudo -cf` before it is installed
/// and removed on drop.
#[derive(Debug)]
pub struct SudoersFile {
    path: PathBuf,
}

impl SudoersFile {
    /// Validates `content` with `visudo -cf` and installs it as `/etc/sudoers.d/<name>` (mode
    /// 0440). `name` must not contain `.` or `~` (sudo ignores such files).
    pub fn install(name: &str, content: &str) -> Result<SudoersFile, SshdError> {
        if name.contains('.') || name.contains('~') || name.contains('/') {
            return Err(SshdError::Command {
                command: "install sudoers".into(),
                detail: format!("name {name:?} would be ignored by sudo (no '.', '~' or '/')"),
            });
        }
        validate_sudoers(content)?;
        let path = Path::new("/etc/sudoers.d").join(name);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, content).map_err(io_err("sudoers", &tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o440))
            .map_err(io_err("sudoers", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("sudoers", &path))?;
        Ok(SudoersFile { path })
    }

    /// The installed file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Checks sudoers text with `visudo -cf` (without installing it).
pub fn validate_sudoers(content: &str) -> Result<(), SshdError> {
    let mut f =
        tempfile::NamedTempFile::new().map_err(io_err("sudoers temp", Path::new("/tmp")))?;
    f.write_all(content.as_bytes())
        .map_err(io_err("sudoers temp", Path::new("/tmp")))?;
    run("visudo", &["-cf", &f.path().to_string_lossy()]).map(|_| ())
}

impl Drop for SudoersFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd_accepts_the_generated_client_key() -> Result<(), Box<dyn std::error::Error>> {
        let sshd = Sshd::start(Ipv4Addr::new(127, 0, 0, 2), SshdOptions::default())?;
        let key = sshd.client_key().ok_or("no client key")?;
        let out = Command::new("ssh")
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-i",
            ])
            .arg(&key.private)
            .args(["-p", &sshd.port().to_string()])
            .arg(format!("{}@{}", sshd.user(), sshd.ip()))
            .arg("echo hello-from-$(id -un)")
            .output()?;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "hello-from-fleet",
            "stderr: {} sshd log: {}",
            String::from_utf8_lossy(&out.stderr),
            sshd.log()
        );
        Ok(())
    }

    #[test]
    fn rotating_the_host_key_changes_the_fingerprint() -> Result<(), Box<dyn std::error::Error>> {
        let mut sshd = Sshd::start(Ipv4Addr::new(127, 0, 0, 3), SshdOptions::default())?;
        let before = sshd.host_key_fingerprint()?;
        let port = sshd.port();
        sshd.rotate_host_key()?;
        assert_ne!(before, sshd.host_key_fingerprint()?);
        assert_eq!(port, sshd.port());
        assert!(TcpStream::connect(sshd.addr()).is_ok());
        Ok(())
    }

    #[test]
    fn runit_fixture_runs_real_services() -> Result<(), Box<dyn std::error::Error>> {
        let host = RunitHost::start(Ipv4Addr::new(127, 0, 0, 4))?;
        assert!(host.sv_status("web")?.starts_with("run:"));
        host.sv("down", "worker")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !host.sv_status("worker")?.starts_with("down:") {
            assert!(Instant::now() < deadline, "worker did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    #[test]
    fn visudo_rejects_a_broken_file_and_accepts_a_scoped_line() {
        assert!(validate_sudoers("fleet ALL=(root) NOPASSWD: /usr/bin/sv status /x\n").is_ok());
        assert!(validate_sudoers("fleet ALL=(root NOPASSWD /usr/bin/sv\n").is_err());
    }
}
