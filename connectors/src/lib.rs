//! Rivulet's sources and sinks: Kafka (rdkafka), the built-in generators (datagen, Nexmark), files,
//! and their record formats, each decoding straight into Arrow batches for the engine.
//!
//! Empty so far: tables fed by INSERT and COPY are the only source until the event-time (#5) and
//! Kafka (#6) issues land. This crate depends on `engine` only and never sees the planner.
