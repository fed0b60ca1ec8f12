-- One run's tier thresholds, high first.
SELECT tier, lower_bound, upper_bound, model_version
FROM tier_thresholds
WHERE as_of = :as_of
ORDER BY CASE tier WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END
