-- Remove the run's tier thresholds (replaced in the same transaction).
DELETE FROM tier_thresholds WHERE as_of = :as_of
