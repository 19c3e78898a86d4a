//! Fakes of the rearguard library's traits, for its integration tests.
//!
//! A crate of its own because it implements the library's traits: it depends
//! on the library, so the library cannot contain it (the root package takes it
//! as a dev-dependency, a cycle Cargo allows for tests).

pub mod cloud_run;

pub use cloud_run::{FakeCall, FakeCloudRun};
