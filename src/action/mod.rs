//! Rollback actions, guard rails, verification and audit (the rollback issue).
