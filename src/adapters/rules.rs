//! Query sources for the rules other than the local tsdb.

use crate::clock::TimestampMs;

/// Cloud Monitoring's PromQL endpoint as a rules query source.
pub struct GcpPromql(pub crate::gcp::promql::PromqlClient);

#[async_trait::async_trait]
impl crate::rules::Querier for GcpPromql {
    async fn query(
        &self,
        expr: &str,
        t_ms: TimestampMs,
    ) -> Result<Vec<crate::labels::Sample>, crate::rules::QueryError> {
        self.0
            .query(expr, t_ms)
            .await
            .map_err(|e| crate::rules::QueryError(e.to_string()))
    }
}
