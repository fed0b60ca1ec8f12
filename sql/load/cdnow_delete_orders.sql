-- Remove the earlier import of these customers' CDNOW orders (ids match the bound pattern).
DELETE FROM orders
WHERE order_id LIKE :pattern AND user_id IN (SELECT user_id FROM spendpred_cdnow_stage)
