-- Tier transitions between the two latest runs, from the churn-warning view.
SELECT previous_tier, current_tier, COUNT(*) AS users,
       SUM(CASE WHEN churn_warning THEN 1 ELSE 0 END) AS churn_warnings
FROM user_spend_tier_changes
GROUP BY previous_tier, current_tier
