-- Remove the earlier import of these CDNOW customers.
DELETE FROM users WHERE user_id IN (SELECT user_id FROM spendpred_cdnow_stage)
