//! Routing tree, grouping and timing, silences, inhibition, time intervals (the dispatch issue).
