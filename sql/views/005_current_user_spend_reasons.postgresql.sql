-- current_user_spend_reasons (PostgreSQL): the reasons of each user's current score, i.e. of
-- the most recent as_of in which the user was scored (user_spend_tier_current). A user who was
-- not explained that night (outside SPENDPRED_REASONS_SCOPE) has no rows: older reasons
-- described an older score. Idempotent: CREATE OR REPLACE keeps the grants given to readers.
CREATE OR REPLACE VIEW spendpred.current_user_spend_reasons AS
SELECT r.user_id, r.as_of, r.rank, r.reason, r.contribution, r.feature, r.template_version, r.model_version
FROM spendpred.user_spend_reasons AS r
JOIN (SELECT user_id, MAX(as_of) AS as_of FROM spendpred.user_spend_scores GROUP BY user_id) AS latest
  ON latest.user_id = r.user_id AND latest.as_of = r.as_of;

COMMENT ON VIEW spendpred.current_user_spend_reasons IS
    'The top reasons (signed contribution in currency) behind each user''s current score; only users explained that night.';
