-- Stored level corrections of the nights up to the bound last_as_of, oldest first (spendpred.monitoring.level_factor).
SELECT as_of, model_version, factor, unclipped_factor, based_on_as_of, created_at
FROM level_corrections
WHERE as_of <= :last_as_of
ORDER BY as_of
