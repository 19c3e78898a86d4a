//! The action half's pure decisions: given facts and a time, no I/O, no
//! store, no runtime. The rate-limit guard rails and the alert re-check
//! ([`guard_rails`]), how a ladder run ends ([`ladder`]), judgement of the evidence ([`judge`]) and the choice
//! of the revision to roll back to ([`plan`]).

pub mod guard_rails;
pub mod judge;
pub mod ladder;
pub mod plan;
