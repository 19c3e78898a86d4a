//! PromQL evaluation over the tsdb; parsing is promql-parser's (the rules issue).
