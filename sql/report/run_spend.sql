-- One run's predicted spend values (for the score histogram).
SELECT predicted_spend FROM user_spend_scores WHERE as_of = :as_of
