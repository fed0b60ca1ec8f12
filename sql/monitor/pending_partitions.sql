-- Published partitions whose horizon has ended and that have no realized evaluation for this
-- horizon and model version yet (spendpred.monitoring.pending_partitions).
-- Bound parameters: last_as_of (run date - H: the latest as_of whose labels are complete),
-- horizon_days.
SELECT s.as_of, s.model_version, COUNT(*) AS users
FROM user_spend_scores AS s
WHERE s.as_of <= :last_as_of
  AND NOT EXISTS (
      SELECT 1 FROM partition_metrics AS m
      WHERE m.as_of = s.as_of AND m.model_version = s.model_version AND m.horizon_days = :horizon_days
  )
GROUP BY s.as_of, s.model_version
ORDER BY s.as_of, s.model_version
