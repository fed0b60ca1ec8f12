-- What the warehouse holds: order time range, buyers and completed spend (spendpred summary).
SELECT
    MIN(ordered_at) AS first_order,
    MAX(ordered_at) AS last_order,
    COUNT(DISTINCT user_id) AS buyers,
    SUM(CASE WHEN status = 'completed' THEN amount ELSE 0 END) AS completed_spend
FROM orders
