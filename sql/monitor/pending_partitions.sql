-- Published partitions whose horizon has ended and that have no realized evaluation for this
-- horizon and model version since they were (re)published (spendpred.monitoring.pending_partitions):
-- a partition republished after its evaluation (a backfill of the scores) is evaluated again.
-- Bound parameters: last_as_of (run date - H: the latest as_of whose labels are complete),
-- horizon_days.
WITH partitions AS (
    SELECT as_of, model_version, COUNT(*) AS users, MAX(scored_at) AS scored_at
    FROM user_spend_scores
    WHERE as_of <= :last_as_of
    GROUP BY as_of, model_version
)
SELECT p.as_of, p.model_version, p.users
FROM partitions AS p
WHERE NOT EXISTS (
    SELECT 1 FROM partition_metrics AS m
    WHERE m.as_of = p.as_of AND m.model_version = p.model_version AND m.horizon_days = :horizon_days
      AND m.evaluated_at >= p.scored_at
)
ORDER BY p.as_of, p.model_version
