-- Fill the run's reasons from the staged rows; run-wide values are bound once.
INSERT INTO user_spend_reasons (as_of, user_id, rank, reason, contribution, feature, template_version, model_version)
SELECT :as_of, user_id, rank, reason, contribution, feature, :template_version, :model_version
FROM spendpred_reasons_stage
