//! `fleetctl tail`: follow events live, or replay them from a stream sequence or a time,
//! through an ordered (ephemeral, flow-controlled) JetStream consumer.

use async_nats::jetstream::consumer::{push, DeliverPolicy};
use chrono::{DateTime, Utc};
use fleetbus_schemas::Envelope;
use futures::StreamExt;

use crate::ctx::summarize;
use crate::{CtlError, Ctx};

/// `tail` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Subject filter, e.g. `fleet.evt.agent.>` (a `fleet.sec.…` filter reads SECRETS).
    #[arg(long, default_value = fleetbus_schemas::subjects::EVENTS_ALL)]
    subject: String,
    /// Replay from this stream sequence.
    #[arg(long, conflicts_with = "since")]
    from_seq: Option<u64>,
    /// Replay from this time (RFC 3339, e.g. 2026-01-01T00:00:00Z).
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Stop when caught up with the stream instead of following it.
    #[arg(long)]
    no_follow: bool,
}

/// Runs `tail`.
pub(crate) async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    let stream_name = if args.subject.starts_with("fleet.sec.") {
        fleetbus_schemas::subjects::SECRETS_STREAM
    } else if args.subject.starts_with("fleet.evt.")
        || args.subject == "fleet.>"
        || args.subject == ">"
    {
        fleetbus_schemas::subjects::EVENTS_STREAM
    } else {
        return Err(CtlError::Usage(format!(
            "--subject {:?}: expected a filter under fleet.evt. (or fleet.sec.)",
            args.subject
        )));
    };
    let deliver_policy = match (args.from_seq, args.since) {
        (Some(0), _) => return Err(CtlError::Usage("--from-seq starts at 1".into())),
        (Some(seq), _) => DeliverPolicy::ByStartSequence {
            start_sequence: seq,
        },
        (None, Some(t)) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
                t.timestamp_nanos_opt().unwrap_or_default(),
            ))
            .map_err(|e| CtlError::Usage(format!("--since {t}: {e}")))?,
        },
        (None, None) if args.no_follow => return Err(CtlError::Usage(
            "--no-follow needs --from-seq or --since (live tailing has nothing to catch up with)"
                .into(),
        )),
        (None, None) => DeliverPolicy::New,
    };
    let js = ctx.jetstream().await?;
    let mut stream = js.get_stream(stream_name).await.map_err(|e| {
        CtlError::nats(
            format!("stream {stream_name} (run `fleetctl bus apply`?)"),
            e,
        )
    })?;
    let last_seq = stream
        .info()
        .await
        .map_err(|e| CtlError::nats(format!("stream {stream_name} info"), e))?
        .state
        .last_sequence;
    if args.no_follow && args.from_seq.is_some_and(|s| s > last_seq) {
        return Ok(());
    }
    let client = ctx.client().await?;
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: args.subject.clone(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| CtlError::nats("create ordered consumer", e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| CtlError::nats("consume", e))?;
    let mut seen = 0u64;
    if args.count == Some(0) {
        return Ok(());
    }
    loop {
        let next = if args.no_follow {
            // Caught up when nothing arrives for a moment after the last message we knew of.
            match tokio::time::timeout(
                ctx.timeout().min(std::time::Duration::from_secs(2)),
                messages.next(),
            )
            .await
            {
                Ok(m) => m,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                m = messages.next() => m,
                r = tokio::signal::ctrl_c() => { let _ = r; break; }
            }
        };
        let Some(msg) = next else { break };
        let msg = msg.map_err(|e| CtlError::nats("consume", e))?;
        let (seq, pending) = msg
            .info()
            .map(|i| (i.stream_sequence, i.pending))
            .unwrap_or((0, 1));
        match fleetbus_schemas::decode::<Envelope>(&msg.payload) {
            Ok(env) => {
                if ctx.global.json {
                    let line = serde_json::json!({
                        "stream_seq": seq,
                        "subject": msg.subject.as_str(),
                        "envelope": env,
                    });
                    println!("{line}");
                } else {
                    println!("#{seq} {}", summarize(&env));
                }
            }
            Err(e) => eprintln!("#{seq} {}: undecodable envelope: {e}", msg.subject),
        }
        seen += 1;
        if args.count.is_some_and(|c| seen >= c) {
            break;
        }
        if args.no_follow && (pending == 0 || seq >= last_seq) {
            break;
        }
    }
    Ok(())
}
