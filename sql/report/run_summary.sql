-- Per-tier size, score range and model of one run.
SELECT tier, COUNT(*) AS users, MIN(predicted_spend) AS min_spend, MAX(predicted_spend) AS max_spend,
       SUM(predicted_spend) AS total_spend, MIN(model_name) AS model_name,
       MIN(model_version) AS model_version, MAX(scored_at) AS scored_at
FROM user_spend_scores
WHERE as_of = :as_of
GROUP BY tier
