//! The one shutdown path: SIGTERM (sent to this test process) cancels the token. This file
//! holds a single test because the signal goes to the whole process.

use std::time::Duration;

#[tokio::test]
async fn sigterm_cancels_the_token() -> anyhow::Result<()> {
    let token = fleetbus_runtime::shutdown();
    assert!(!token.is_cancelled());
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(std::process::id().to_string())
        .status()?;
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(10), token.cancelled()).await?;
    Ok(())
}
