-- One run's published scores, ordered by user.
SELECT as_of, user_id, predicted_spend, tier, model_name, model_version, scored_at
FROM user_spend_scores
WHERE as_of = :as_of
ORDER BY user_id
