//! `nats-server` configuration text (single node and cluster) and the NKey credentials of the
//! fleetbus users. The config only ever contains public keys; seeds stay in `<dir>/<role>.nk`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::streams::{tap_api_prefix, tap_deliver_prefix, EVENTS_STREAM, TAP_ADMIN_API_PREFIX};
use crate::users::{Account, Role, SubjectRules};
use crate::BusConfigError;

/// Default largest message the server accepts (1 MiB, the nats-server default).
pub const DEFAULT_MAX_PAYLOAD: u32 = 1 << 20;

/// The NKey seeds of all roles, kept as files `<dir>/<role>.nk` (mode 0600).
#[derive(Debug, Clone)]
pub struct Credentials {
    dir: PathBuf,
    public_keys: BTreeMap<Role, String>,
}

impl Credentials {
    /// Load the seed of every role from `dir`, generating and writing the missing ones.
    /// Idempotent: existing seeds are never replaced.
    pub fn ensure(dir: &Path) -> Result<Credentials, BusConfigError> {
        fs::create_dir_all(dir).map_err(|e| BusConfigError::io(dir, e))?;
        for role in Role::ALL {
            let path = Self::seed_path_in(dir, role);
            if !path.exists() {
                write_new_seed(&path)?;
                tracing::info!(role = %role, path = %path.display(), "nkey seed generated");
            }
        }
        Self::load(dir)
    }

    /// Load the seed of every role from `dir`; fails if one is missing or unreadable.
    pub fn load(dir: &Path) -> Result<Credentials, BusConfigError> {
        let mut public_keys = BTreeMap::new();
        for role in Role::ALL {
            let path = Self::seed_path_in(dir, role);
            let key = load_seed(&path)?;
            public_keys.insert(role, key.public_key());
        }
        Ok(Credentials {
            dir: dir.to_owned(),
            public_keys,
        })
    }

    /// The directory holding the seed files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `role`'s seed is kept.
    pub fn seed_path(&self, role: Role) -> PathBuf {
        Self::seed_path_in(&self.dir, role)
    }

    /// `<dir>/<role>.nk`.
    pub fn seed_path_in(dir: &Path, role: Role) -> PathBuf {
        dir.join(format!("{}.nk", role.name()))
    }

    /// The user's public key (`U…`), as listed in the server config.
    pub fn public_key(&self, role: Role) -> &str {
        self.public_keys
            .get(&role)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// Read a seed file and parse it; the error never contains the seed.
pub fn load_seed(path: &Path) -> Result<nkeys::KeyPair, BusConfigError> {
    let meta = fs::metadata(path).map_err(|e| BusConfigError::io(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(BusConfigError::Seed {
            path: path.to_owned(),
            reason: format!(
                "mode {:o} lets others read it; run `chmod 600 {}`",
                meta.permissions().mode() & 0o777,
                path.display()
            ),
        });
    }
    let text = fs::read_to_string(path).map_err(|e| BusConfigError::io(path, e))?;
    nkeys::KeyPair::from_seed(text.trim()).map_err(|e| BusConfigError::Seed {
        path: path.to_owned(),
        reason: format!("not a valid nkey user seed: {e}"),
    })
}

fn write_new_seed(path: &Path) -> Result<(), BusConfigError> {
    let key = nkeys::KeyPair::new_user();
    let seed = key.seed().map_err(|e| BusConfigError::Seed {
        path: path.to_owned(),
        reason: format!("cannot encode generated seed: {e}"),
    })?;
    // Write a private temp file first, so a crash never leaves a truncated seed.
    // Unique per writer (the new public key), so concurrent writers never share a temp file.
    let public = key.public_key();
    let tmp = path.with_extension(format!("nk.tmp.{}", &public[public.len() - 16..]));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| BusConfigError::io(&tmp, e))?;
    f.write_all(format!("{seed}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| BusConfigError::io(&tmp, e))?;
    drop(f);
    // Publish it with a hard link, which fails if the name exists: a concurrent `ensure`
    // that won keeps its seed, and a reader never sees a half-written file.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(BusConfigError::io(path, e)),
    }
}

/// Cluster membership of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConf {
    /// Cluster name (same on every node).
    pub name: String,
    /// This node's route port (on `host`).
    pub port: u16,
    /// Route URLs of the other nodes, e.g. `nats-route://127.0.0.1:6223`.
    pub routes: Vec<String>,
}

/// One server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConf {
    /// Unique per node; required by JetStream in a cluster.
    pub server_name: String,
    /// Listen address for clients (loopback in dev and tests).
    pub host: String,
    /// Client port.
    pub port: u16,
    /// HTTP monitoring port on `host`, if any.
    pub http_port: Option<u16>,
    /// JetStream file store directory.
    pub store_dir: PathBuf,
    /// Largest message accepted.
    pub max_payload: u32,
    /// Cluster membership, if clustered.
    pub cluster: Option<ClusterConf>,
}

impl ServerConf {
    /// A single node on 127.0.0.1 with its store under `<state>/nats/js`.
    pub fn single(state_dir: &Path, port: u16, http_port: Option<u16>) -> ServerConf {
        ServerConf {
            server_name: "fleetbus-0".into(),
            host: "127.0.0.1".into(),
            port,
            http_port,
            store_dir: state_dir.join("nats").join("js"),
            max_payload: DEFAULT_MAX_PAYLOAD,
            cluster: None,
        }
    }

    /// The config text for `nats-server -c`.
    pub fn render(&self, creds: &Credentials) -> String {
        render(self, creds)
    }
}

/// Ports of one cluster node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePorts {
    /// Client port.
    pub client: u16,
    /// Route (cluster) port.
    pub route: u16,
    /// HTTP monitoring port.
    pub http: Option<u16>,
}

/// Settings for an N-node cluster on loopback: node `i` is `fleetbus-<i>`, stores under
/// `<state>/nats/js-<i>`, and routes to every other node.
pub fn cluster(state_dir: &Path, name: &str, nodes: &[NodePorts]) -> Vec<ServerConf> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, ports)| ServerConf {
            server_name: format!("fleetbus-{i}"),
            host: "127.0.0.1".into(),
            port: ports.client,
            http_port: ports.http,
            store_dir: state_dir.join("nats").join(format!("js-{i}")),
            max_payload: DEFAULT_MAX_PAYLOAD,
            cluster: Some(ClusterConf {
                name: name.to_owned(),
                port: ports.route,
                routes: nodes
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("nats-route://127.0.0.1:{}", p.route))
                    .collect(),
            }),
        })
        .collect()
}

fn q(s: &str) -> String {
    // NATS config accepts JSON strings; this quotes `$`, `>` and friends safely.
    serde_json::Value::String(s.to_owned()).to_string()
}

fn list(items: &[String]) -> String {
    let v: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", v.join(", "))
}

fn rules(out: &mut String, name: &str, r: &SubjectRules) {
    let _ = write!(out, "          {name}: {{ allow: {}", list(&r.allow));
    if !r.deny.is_empty() {
        let _ = write!(out, ", deny: {}", list(&r.deny));
    }
    out.push_str(" }\n");
}

fn render_users(out: &mut String, creds: &Credentials, account: Account) {
    let _ = writeln!(out, "    users: [");
    for role in Role::ALL.into_iter().filter(|r| r.account() == account) {
        let perms = role.permissions();
        let _ = writeln!(out, "      # {}", role.name());
        let _ = writeln!(out, "      {{");
        let _ = writeln!(out, "        nkey: {}", q(creds.public_key(role)));
        let _ = writeln!(out, "        permissions: {{");
        rules(out, "publish", &perms.publish);
        rules(out, "subscribe", &perms.subscribe);
        let _ = writeln!(out, "        }}");
        let _ = writeln!(out, "      }}");
    }
    let _ = writeln!(out, "    ]");
}

/// The two accounts and the bridge between them: `TAP` imports the live events and, for its
/// `EVENTS` mirror only, consumer creation on `FLEET`'s `EVENTS`, its flow control and the
/// mirror's deliveries.
fn render_accounts(out: &mut String, creds: &Credentials) {
    let fleet = Account::Fleet.name();
    let tap = Account::Tap.name();
    let evt = EVENTS_STREAM;
    let api = tap_api_prefix();
    let deliver = tap_deliver_prefix();
    let _ = writeln!(out, "accounts {{");
    let _ = writeln!(out, "  {fleet} {{");
    let _ = writeln!(out, "    jetstream: enabled");
    render_users(out, creds, Account::Fleet);
    let _ = writeln!(out, "    exports: [");
    for (kind, subject) in [
        ("stream", "fleet.evt.>".to_owned()),
        ("service", format!("$JS.API.CONSUMER.CREATE.{evt}")),
        ("service", format!("$JS.API.CONSUMER.CREATE.{evt}.>")),
        ("service", format!("$JS.FC.{evt}.>")),
        ("stream", format!("{deliver}.>")),
    ] {
        let _ = writeln!(
            out,
            "      {{ {kind}: {}, accounts: [{}] }}",
            q(&subject),
            q(tap)
        );
    }
    let _ = writeln!(out, "    ]");
    let _ = writeln!(out, "    imports: [");
    let _ = writeln!(
        out,
        "      {{ service: {{ account: {}, subject: \"$JS.API.>\" }}, to: {} }}",
        q(tap),
        q(&format!("{TAP_ADMIN_API_PREFIX}.>"))
    );
    let _ = writeln!(out, "    ]");
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "  {tap} {{");
    let _ = writeln!(out, "    jetstream: enabled");
    render_users(out, creds, Account::Tap);
    let _ = writeln!(
        out,
        "    exports: [ {{ service: \"$JS.API.>\", accounts: [{}] }} ]",
        q(fleet)
    );
    let _ = writeln!(out, "    imports: [");
    let _ = writeln!(
        out,
        "      {{ stream: {{ account: {}, subject: \"fleet.evt.>\" }} }}",
        q(fleet)
    );
    for suffix in ["", ".>"] {
        let _ = writeln!(
            out,
            "      {{ service: {{ account: {}, subject: {} }}, to: {} }}",
            q(fleet),
            q(&format!("$JS.API.CONSUMER.CREATE.{evt}{suffix}")),
            q(&format!("{api}.CONSUMER.CREATE.{evt}{suffix}"))
        );
    }
    let _ = writeln!(
        out,
        "      {{ service: {{ account: {}, subject: {} }} }}",
        q(fleet),
        q(&format!("$JS.FC.{evt}.>"))
    );
    let _ = writeln!(
        out,
        "      {{ stream: {{ account: {}, subject: {} }} }}",
        q(fleet),
        q(&format!("{deliver}.>"))
    );
    let _ = writeln!(out, "    ]");
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "}}");
}

/// Render a server config. Every role in `creds` becomes an nkey user with its permissions.
pub fn render(conf: &ServerConf, creds: &Credentials) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# generated by fleetbus-bus-config; do not edit by hand"
    );
    let _ = writeln!(out, "server_name: {}", q(&conf.server_name));
    let _ = writeln!(out, "host: {}", q(&conf.host));
    let _ = writeln!(out, "port: {}", conf.port);
    if let Some(http) = conf.http_port {
        let _ = writeln!(out, "http: {}", q(&format!("{}:{http}", conf.host)));
    }
    let _ = writeln!(out, "max_payload: {}", conf.max_payload);
    let _ = writeln!(out, "jetstream {{");
    let _ = writeln!(
        out,
        "  store_dir: {}",
        q(&conf.store_dir.display().to_string())
    );
    let _ = writeln!(out, "}}");
    if let Some(cluster) = &conf.cluster {
        let _ = writeln!(out, "cluster {{");
        let _ = writeln!(out, "  name: {}", q(&cluster.name));
        let _ = writeln!(
            out,
            "  listen: {}",
            q(&format!("{}:{}", conf.host, cluster.port))
        );
        let _ = writeln!(out, "  routes: {}", list(&cluster.routes));
        let _ = writeln!(out, "}}");
    }
    render_accounts(&mut out, creds);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "fleetbus-bus-config-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let _ = fs::create_dir_all(&dir);
        dir
    }

    #[test]
    fn ensure_is_idempotent_private_and_conf_has_only_public_keys() {
        let dir = tempdir();
        let a = Credentials::ensure(&dir).expect("first ensure");
        let b = Credentials::ensure(&dir).expect("second ensure");
        for role in Role::ALL {
            assert_eq!(a.public_key(role), b.public_key(role));
            assert!(a.public_key(role).starts_with('U'));
            let mode = fs::metadata(a.seed_path(role)).map(|m| m.permissions().mode());
            assert_eq!(mode.ok().map(|m| m & 0o777), Some(0o600));
        }
        let text = render(&ServerConf::single(&dir, 4222, Some(8222)), &a);
        for role in Role::ALL {
            let seed = fs::read_to_string(a.seed_path(role)).unwrap_or_default();
            assert!(!text.contains(seed.trim()), "seed leaked into conf");
            assert!(text.contains(a.public_key(role)));
        }
        assert!(text.contains("port: 4222"));
        assert!(text.contains("\"127.0.0.1:8222\""));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_ensure_agrees_on_one_seed_per_role() {
        let dir = tempdir();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || Credentials::ensure(&dir).map_err(|e| e.to_string()))
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("ensure"))
            .collect();
        for role in Role::ALL {
            let keys: Vec<_> = results.iter().map(|c| c.public_key(role)).collect();
            assert!(keys.windows(2).all(|w| w[0] == w[1]), "{role}: {keys:?}");
        }
        let leftovers = fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
                    .count()
            })
            .unwrap_or_default();
        assert_eq!(leftovers, 0);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn world_readable_seed_is_rejected() {
        let dir = tempdir();
        let creds = Credentials::ensure(&dir).expect("ensure");
        let path = creds.seed_path(Role::Tap);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = Credentials::load(&dir).expect_err("must refuse 0644 seed");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn cluster_nodes_route_to_each_other() {
        let nodes = [
            NodePorts {
                client: 1,
                route: 11,
                http: None,
            },
            NodePorts {
                client: 2,
                route: 12,
                http: None,
            },
            NodePorts {
                client: 3,
                route: 13,
                http: None,
            },
        ];
        let confs = cluster(Path::new("/s"), "fb", &nodes);
        assert_eq!(confs.len(), 3);
        assert_eq!(
            confs[1].cluster.as_ref().map(|c| c.routes.clone()),
            Some(vec![
                "nats-route://127.0.0.1:11".to_string(),
                "nats-route://127.0.0.1:13".to_string()
            ])
        );
        assert_ne!(confs[0].store_dir, confs[1].store_dir);
    }
}
