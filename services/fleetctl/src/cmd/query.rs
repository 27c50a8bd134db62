//! `fleetctl query <model> [--json-args '{…}']`.

use crate::{CtlError, Ctx};

/// `query` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model: overview, host, history, alerts, events, log_head, registry, users.
    model: String,
    /// The request as JSON (fields of the model's query type in `schemas/src/queries.rs`),
    /// e.g. `{"host": "web-1"}` or `{"as_of": {"seq": 100}}`.
    #[arg(long, default_value = "{}")]
    json_args: String,
}

/// Runs `query`.
pub(crate) async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    if args.model.is_empty()
        || !args
            .model
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return Err(CtlError::Usage(format!(
            "model {:?} must be a lowercase name like overview, host, history, alerts, events, log_head, registry",
            args.model
        )));
    }
    let request: serde_json::Value =
        serde_json::from_str(&args.json_args).map_err(|e| CtlError::Input {
            what: "--json-args".into(),
            reason: e.to_string(),
        })?;
    if !request.is_object() {
        return Err(CtlError::Input {
            what: "--json-args".into(),
            reason: "expected a JSON object".into(),
        });
    }
    let answer = ctx.query(&args.model, &request).await?;
    // Read models are nested structures: pretty JSON is the human form too.
    let pretty = serde_json::to_string_pretty(&answer).unwrap_or_default();
    ctx.print(pretty, &answer);
    Ok(())
}
