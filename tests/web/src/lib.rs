//! End-to-end tests of `fleetbus-web` (in `tests/`): each starts a real nats-server, ingest (and
//! for `real_fleet` the executor and sshd targets) in-process next to the web app. They live in
//! their own crate so that no service crate depends on another, not even for its tests.
