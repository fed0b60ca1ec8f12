-- Remove one night's retrain decision (replaced in the same transaction).
DELETE FROM retrain_requests WHERE as_of = :as_of
