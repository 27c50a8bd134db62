//! Pins the wire format. Golden MessagePack fixtures under `fixtures/v<SCHEMA_VERSION>/` and JSON
//! Schemas under `json/` must match what the code produces. After an intended change: bump
//! `SCHEMA_VERSION` if old readers would break, then regenerate with
//! `UPDATE_FIXTURES=1 cargo test -p fleetbus-schemas --test wire` and commit the files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fleetbus_schemas::{
    decode, encode, Actor, Command, CommandEnvelope, CommandId, Envelope, Event, EventId, UserRole,
    SCHEMA_VERSION,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn updating() -> bool {
    std::env::var_os("UPDATE_FIXTURES").is_some()
}

fn fixed_time() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap()
}

/// A stable id per fixture name, so adding a sample elsewhere never changes this fixture.
fn fixture_ulid(name: &str) -> ulid::Ulid {
    // FNV-1a: tiny, deterministic, good enough to spread names.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    ulid::Ulid::from_parts(1_767_225_600_000, u128::from(hash))
}

fn event_envelopes() -> BTreeMap<String, Envelope> {
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for event in Event::samples() {
        let base = format!("{}.{}", event.domain(), event.type_name());
        let n = seen.entry(base.clone()).or_default();
        let name = if *n == 0 {
            base.clone()
        } else {
            format!("{base}.{n}")
        };
        *n += 1;
        let envelope = Envelope {
            id: EventId(fixture_ulid(&name)),
            time: fixed_time(),
            source: "fixture".into(),
            actor: Actor::user("alice", UserRole::Operator),
            causation: Some(CommandId(ulid::Ulid::from_parts(1_767_225_600_000, 999))),
            schema: SCHEMA_VERSION,
            event,
        };
        out.insert(name, envelope);
    }
    out
}

fn command_envelopes() -> BTreeMap<String, CommandEnvelope> {
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for command in Command::samples() {
        let base = format!("{}.{}", command.area(), command.verb());
        let n = seen.entry(base.clone()).or_default();
        let name = if *n == 0 {
            base.clone()
        } else {
            format!("{base}.{n}")
        };
        *n += 1;
        let envelope = CommandEnvelope {
            id: CommandId(fixture_ulid(&name)),
            time: fixed_time(),
            actor: Actor::user("alice", UserRole::Admin),
            schema: SCHEMA_VERSION,
            command,
        };
        out.insert(name, envelope);
    }
    out
}

/// Compares (or, when updating, writes) one fixture directory; returns mismatch descriptions.
fn check_dir(dir: &Path, expected: BTreeMap<String, Vec<u8>>) -> Vec<String> {
    if updating() {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in &expected {
            std::fs::write(dir.join(format!("{name}.msgpack")), bytes).unwrap();
        }
        return vec![];
    }
    let mut problems = vec![];
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_FIXTURES=1", dir.display()))
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".msgpack")
                .to_string()
        })
        .collect();
    for (name, bytes) in &expected {
        match std::fs::read(dir.join(format!("{name}.msgpack"))) {
            Ok(stored) if &stored == bytes => {}
            Ok(_) => problems.push(format!(
                "{name}: encoding changed without a schema version bump"
            )),
            Err(_) => problems.push(format!("{name}: no fixture (new message type? regenerate)")),
        }
    }
    for name in on_disk.difference(&expected.keys().cloned().collect()) {
        problems.push(format!(
            "{name}: fixture exists but no sample produces it (type removed?)"
        ));
    }
    problems
}

#[test]
fn golden_fixtures_pin_every_event_and_command_encoding() {
    let dir = root().join(format!("fixtures/v{SCHEMA_VERSION}"));
    let events = event_envelopes()
        .into_iter()
        .map(|(k, v)| (k, encode(&v).unwrap()))
        .collect();
    let commands = command_envelopes()
        .into_iter()
        .map(|(k, v)| (k, encode(&v).unwrap()))
        .collect();
    let mut problems = check_dir(&dir.join("events"), events);
    problems.extend(check_dir(&dir.join("commands"), commands));
    assert!(
        problems.is_empty(),
        "wire format drift:\n{}",
        problems.join("\n")
    );
}

#[test]
fn fixtures_of_every_version_still_decode() {
    for version in std::fs::read_dir(root().join("fixtures")).unwrap() {
        let version = version.unwrap().path();
        for file in std::fs::read_dir(version.join("events")).unwrap() {
            let path = file.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let env: Envelope = decode(&bytes)
                .unwrap_or_else(|e| panic!("{} no longer decodes: {e}", path.display()));
            assert!(env.schema <= SCHEMA_VERSION);
        }
        for file in std::fs::read_dir(version.join("commands")).unwrap() {
            let path = file.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let _: CommandEnvelope = decode(&bytes)
                .unwrap_or_else(|e| panic!("{} no longer decodes: {e}", path.display()));
        }
    }
}

#[test]
fn round_trip_and_named_fields_for_other_languages() {
    for (name, env) in event_envelopes() {
        let bytes = encode(&env).unwrap();
        let back: Envelope = decode(&bytes).unwrap();
        assert_eq!(back, env, "{name}");
        // A plain msgpack reader sees maps with field names, not positional arrays.
        let generic: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(generic["id"], env.id.to_string(), "{name}");
        assert_eq!(generic["event"]["domain"], env.event.domain(), "{name}");
        assert_eq!(
            generic["event"]["body"]["type"],
            env.event.type_name(),
            "{name}"
        );
    }
    for (name, cmd) in command_envelopes() {
        let back: CommandEnvelope = decode(&encode(&cmd).unwrap()).unwrap();
        assert_eq!(back, cmd, "{name}");
    }
}

#[test]
fn garbage_and_oversize_payloads_are_rejected_with_a_reason() {
    let err = decode::<Envelope>(b"\xc1\xff garbage").unwrap_err();
    assert!(err.to_string().starts_with("malformed message"), "{err}");
    let big = vec![0x90u8; fleetbus_schemas::MAX_MESSAGE_BYTES + 1];
    let err = decode::<Envelope>(&big).unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    // Valid msgpack, wrong shape: an invalid host id inside an otherwise fine envelope.
    let mut env = event_envelopes().remove("host.removed").unwrap();
    env.source = "x".into();
    let mut json = serde_json::to_value(&env).unwrap();
    json["event"]["body"]["data"]["host"] = "Bad.Host".into();
    let bytes = rmp_serde::to_vec_named(&json).unwrap();
    let err = decode::<Envelope>(&bytes).unwrap_err();
    assert!(err.to_string().contains("invalid host id"), "{err}");
}

fn schema_text<T: schemars::JsonSchema>() -> String {
    let mut text = serde_json::to_string_pretty(&schemars::schema_for!(T)).unwrap();
    text.push('\n');
    text
}

#[test]
fn json_schemas_are_up_to_date() {
    use fleetbus_schemas::queries::*;
    let schemas = [
        ("envelope", schema_text::<Envelope>()),
        ("command-envelope", schema_text::<CommandEnvelope>()),
        ("query-overview", schema_text::<OverviewQuery>()),
        ("query-host", schema_text::<HostQuery>()),
        ("query-history", schema_text::<HistoryQuery>()),
        ("query-alerts", schema_text::<AlertsQuery>()),
        ("query-events", schema_text::<EventsQuery>()),
        ("query-committed", schema_text::<CommittedQuery>()),
        (
            "query-user-credential",
            schema_text::<UserCredentialQuery>(),
        ),
    ];
    let dir = root().join("json");
    let mut stale = vec![];
    for (name, text) in schemas {
        let path = dir.join(format!("{name}.schema.json"));
        if updating() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "stale JSON Schemas {stale:?}: run UPDATE_FIXTURES=1 cargo test -p fleetbus-schemas --test wire"
    );
}
