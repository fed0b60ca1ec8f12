-- Remove one night's estimated metrics for a horizon (replaced in the same transaction).
DELETE FROM estimated_metrics WHERE as_of = :as_of AND horizon_days = :horizon_days
