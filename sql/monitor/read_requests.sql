-- The latest retrain decisions up to the bound last_as_of, newest first (spendpred monitor, the page).
SELECT as_of, model_version, decision, reasons, cooldown_until, decided_at
FROM retrain_requests
WHERE as_of <= :last_as_of
ORDER BY as_of DESC
LIMIT 10
