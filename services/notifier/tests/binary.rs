//! The binary refuses a bad config with the key and the reason, and a secrets file others can read.

use std::process::Command;

#[test]
fn bad_config_exits_non_zero_naming_the_key_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notifier.toml");
    std::fs::write(
        &path,
        "version = 1\n[[rules]]\nrule = \"r1\"\nrecipients = []\nchannels = [\"hook\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetbus-notifier"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("rules[0]") && stderr.contains("recipients is empty"),
        "{stderr}"
    );

    std::fs::write(&path, "version = 1\ncolour = \"blue\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetbus-notifier"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");
}
