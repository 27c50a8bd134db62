//! Installing the global subscriber: once, and a clear error the second time or for a bad
//! filter. (Own test binary: the subscriber is process-global.)

use fleetbus_runtime::{init_tracing, LogFormat};

#[test]
fn installs_once() {
    assert!(init_tracing(LogFormat::Json).is_ok());
    let again = init_tracing(LogFormat::Text);
    let text = again.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.starts_with("tracing setup:"), "{text}");
    tracing::info!(check = true, "tracing works after init");
}
