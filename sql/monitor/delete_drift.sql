-- Remove one night's drift rows (replaced in the same transaction).
DELETE FROM drift_metrics WHERE as_of = :as_of
