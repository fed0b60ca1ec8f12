-- Number of users scored in one run.
SELECT COUNT(*) FROM user_spend_scores WHERE as_of = :as_of
