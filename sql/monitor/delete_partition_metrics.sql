-- Remove one partition's realized metrics for a horizon (replaced in the same transaction).
DELETE FROM partition_metrics WHERE as_of = :as_of AND horizon_days = :horizon_days
