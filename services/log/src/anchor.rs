//! The head anchor event: ingest periodically publishes its committed head (seq, hash) and newest
//! checkpoint digest as a `system.head_anchored` event. It goes through the stream into every
//! replica's log like any other event, and verify checks each anchor in the log against the
//! chain before it. Ingest publishes it; the event's shape belongs to the log format.

use fleetbus_schemas::events::system::SystemEvent;
use fleetbus_schemas::{Actor, Envelope, Event};

use crate::{Checkpoint, Head};

/// The component that writes logs and signs their anchors.
pub const COMPONENT: &str = "ingest";

/// The anchor event for a head and checkpoint.
pub fn anchor_event(log: &str, head: &Head, checkpoint: Option<&Checkpoint>) -> Envelope {
    Envelope::new(
        COMPONENT,
        Actor::service(COMPONENT),
        None,
        Event::System(SystemEvent::HeadAnchored {
            component: COMPONENT.into(),
            log: log.to_owned(),
            seq: head.seq,
            hash: hex::encode(head.hash),
            checkpoint_seq: checkpoint.map_or(0, |c| c.seq),
            checkpoint: checkpoint.map_or_else(String::new, |c| hex::encode(c.digest)),
        }),
    )
}
