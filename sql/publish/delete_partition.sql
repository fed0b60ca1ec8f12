-- Remove the run's partition of user_spend_scores (same transaction as the insert).
DELETE FROM user_spend_scores WHERE as_of = :as_of
