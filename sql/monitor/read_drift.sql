-- One night's stored drift rows, worst first (spendpred monitor).
SELECT as_of, model_version, feature, psi, statistic, status, computed_at
FROM drift_metrics
WHERE as_of = :as_of
ORDER BY psi DESC, feature
