-- Remove the run's reasons (same transaction as the scores: they describe the partition's scores).
DELETE FROM user_spend_reasons WHERE as_of = :as_of
