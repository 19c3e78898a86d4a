//! Email and webhook notifications through a durable outbox (the dispatch issue).
