//! `fleetctl send FILE|-`: publish any command from its JSON form.

use std::io::Read as _;
use std::path::PathBuf;

use fleetbus_schemas::Command;

use super::agent::report;
use crate::{CtlError, Ctx};

/// `send` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A file holding one command as JSON (`{"area": "host", "body": {"type": "remove",
    /// "data": {"host": "web-1"}}}`), or `-` for standard input. It gets a fresh command id and
    /// the actor `admin`.
    file: PathBuf,
}

/// Parses a command's JSON form; the error names the offending field.
pub(crate) fn parse_command(text: &str, what: &str) -> Result<Command, CtlError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!("at {path}: ") };
        CtlError::Input {
            what: what.to_owned(),
            reason: format!(
                "{at}{} (expected a command like {{\"area\": \"host\", \"body\": {{\"type\": \"remove\", \"data\": {{\"host\": \"web-1\"}}}}}}; see schemas/json/)",
                e.inner()
            ),
        }
    })
}

/// Runs `send`.
pub(crate) async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    let (text, what) = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .take(fleetbus_schemas::MAX_MESSAGE_BYTES as u64 + 1)
            .read_to_string(&mut s)
            .map_err(|e| CtlError::io("-", e))?;
        (s, "command JSON from standard input".to_owned())
    } else {
        let s = std::fs::read_to_string(&args.file).map_err(|e| CtlError::io(&args.file, e))?;
        (s, format!("command JSON in {}", args.file.display()))
    };
    if text.len() > fleetbus_schemas::MAX_MESSAGE_BYTES {
        return Err(CtlError::Input {
            what,
            reason: format!("larger than {} bytes", fleetbus_schemas::MAX_MESSAGE_BYTES),
        });
    }
    let command = parse_command(&text, &what)?;
    report(ctx, command).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_command_round_trips_through_json() {
        for c in Command::samples() {
            let text = serde_json::to_string(&c).unwrap();
            assert_eq!(parse_command(&text, "t").unwrap(), c);
        }
    }

    #[test]
    fn malformed_json_names_what_and_where() {
        let cases = [
            ("{not json", "line 1"),
            (
                r#"{"area": "host", "body": {"type": "remove", "data": {"host": "Bad Host"}}}"#,
                "body.data.host",
            ),
            (r#"{"area": "nope", "body": {}}"#, "unknown variant"),
            (
                r#"{"area": "host", "body": {"type": "add", "data": {"host": "a"}}}"#,
                "address",
            ),
        ];
        for (text, needle) in cases {
            let err = parse_command(text, "command JSON in x.json")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(needle) && err.contains("x.json"),
                "{needle}: {err}"
            );
        }
    }
}
