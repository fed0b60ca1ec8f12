-- The source-data contract (SQLite and PostgreSQL; dialect fragments rendered by
-- spendpred.warehouse.load_sql): per-row rules on the source relations visible to a snapshot
-- (rows before cutoff, the end of the as-of date). One row per violation example: the rule,
-- an example (the row's key and offending value, as text) and the rule's total count n; at
-- most max_examples examples per rule, in byte order. Rules without violations return no row.
-- The rule names are spendpred.validation.SOURCE_RULES; spendpred.behaviour.source_checks
-- records the counts in the manifest and the gate turns each into an expectation (n == 0).
-- Bound parameters: cutoff, future_limit (rows at or after it are dated in the future: the
-- one rule that looks at every row, visible or not), max_money (the plausibility bound of one
-- amount), event_types (expanding: the known event types), max_examples.
-- NaN (a PostgreSQL NUMERIC value) sorts above every number and +Infinity is above
-- max_money, so "NOT (amount <= :max_money)" catches non-finite and implausible amounts on
-- both dialects; NULL (also how SQLite stores NaN) has its own branch. The rules look at values,
-- not declared types: amounts of any numeric type, ids as text or integers (joined as text).
SELECT rule, example, n
FROM (
    SELECT rule, example,
           COUNT(*) OVER (PARTITION BY rule) AS n,
           ROW_NUMBER() OVER (PARTITION BY rule ORDER BY example {{byte_order}}) AS rn
    FROM (
        SELECT 'order_amount_negative' AS rule,
               'order ' || COALESCE(CAST(order_id AS TEXT), 'NULL') || ': amount ' || CAST(amount AS TEXT) AS example
        FROM orders
        WHERE ordered_at < :cutoff AND amount < 0
        UNION ALL
        SELECT 'order_amount_not_finite',
               'order ' || COALESCE(CAST(order_id AS TEXT), 'NULL') || ': amount ' || COALESCE(CAST(amount AS TEXT), 'NULL')
        FROM orders
        WHERE ordered_at < :cutoff AND NOT (amount <= :max_money) AND NOT (amount < 0)
        UNION ALL
        SELECT 'order_amount_not_finite',
               'order ' || COALESCE(CAST(order_id AS TEXT), 'NULL') || ': amount NULL'
        FROM orders
        WHERE ordered_at < :cutoff AND amount IS NULL
        UNION ALL
        SELECT 'order_items_below_one',
               'order ' || COALESCE(CAST(order_id AS TEXT), 'NULL') || ': items ' || COALESCE(CAST(items AS TEXT), 'NULL')
        FROM orders
        WHERE ordered_at < :cutoff AND (items IS NULL OR NOT (items >= 1))
        UNION ALL
        SELECT 'event_type_unknown',
               'event of user ' || COALESCE(CAST(user_id AS TEXT), 'NULL') || ' at ' || CAST(occurred_at AS TEXT)
               || ': type ' || COALESCE(CAST(event_type AS TEXT), 'NULL')
        FROM events
        WHERE occurred_at < :cutoff AND (event_type IS NULL OR event_type NOT IN :event_types)
        UNION ALL
        SELECT 'review_rating_out_of_range',
               'review of user ' || COALESCE(CAST(user_id AS TEXT), 'NULL') || ' at ' || CAST(created_at AS TEXT)
               || ': rating ' || COALESCE(CAST(rating AS TEXT), 'NULL')
        FROM reviews
        WHERE created_at < :cutoff AND (rating IS NULL OR NOT (rating >= 1 AND rating <= 5))
        UNION ALL
        SELECT 'order_user_unknown',
               'order ' || COALESCE(CAST(order_id AS TEXT), 'NULL') || ': user ' || COALESCE(CAST(user_id AS TEXT), 'NULL')
        FROM orders o
        WHERE o.ordered_at < :cutoff AND NOT EXISTS (SELECT 1 FROM users u WHERE {{text_id(u.user_id)}} = {{text_id(o.user_id)}})
        UNION ALL
        SELECT 'event_user_unknown',
               'event of user ' || COALESCE(CAST(user_id AS TEXT), 'NULL') || ' at ' || CAST(occurred_at AS TEXT)
        FROM events e
        WHERE e.occurred_at < :cutoff AND NOT EXISTS (SELECT 1 FROM users u WHERE {{text_id(u.user_id)}} = {{text_id(e.user_id)}})
        UNION ALL
        SELECT 'review_user_unknown',
               'review of user ' || COALESCE(CAST(user_id AS TEXT), 'NULL') || ' at ' || CAST(created_at AS TEXT)
        FROM reviews r
        WHERE r.created_at < :cutoff AND NOT EXISTS (SELECT 1 FROM users u WHERE {{text_id(u.user_id)}} = {{text_id(r.user_id)}})
        UNION ALL
        SELECT 'order_id_not_unique',
               'order ' || COALESCE(CAST(order_id AS TEXT), 'NULL') || ': ' || CAST(COUNT(*) AS TEXT) || ' rows'
        FROM orders
        WHERE ordered_at < :cutoff
        GROUP BY order_id
        HAVING COUNT(*) > 1 OR order_id IS NULL
        UNION ALL
        SELECT 'user_id_not_unique',
               'user ' || COALESCE(CAST(user_id AS TEXT), 'NULL') || ': ' || CAST(COUNT(*) AS TEXT) || ' rows'
        FROM users
        WHERE signup_at < :cutoff
        GROUP BY user_id
        HAVING COUNT(*) > 1 OR user_id IS NULL
        UNION ALL
        SELECT 'timestamp_in_future', 'user ' || COALESCE(CAST(user_id AS TEXT), 'NULL') || ' signed up at ' || CAST(signup_at AS TEXT)
        FROM users
        WHERE signup_at >= :future_limit
        UNION ALL
        SELECT 'timestamp_in_future', 'order ' || COALESCE(CAST(order_id AS TEXT), 'NULL') || ' at ' || CAST(ordered_at AS TEXT)
        FROM orders
        WHERE ordered_at >= :future_limit
        UNION ALL
        SELECT 'timestamp_in_future', 'event of user ' || COALESCE(CAST(user_id AS TEXT), 'NULL') || ' at ' || CAST(occurred_at AS TEXT)
        FROM events
        WHERE occurred_at >= :future_limit
        UNION ALL
        SELECT 'timestamp_in_future', 'review of user ' || COALESCE(CAST(user_id AS TEXT), 'NULL') || ' at ' || CAST(created_at AS TEXT)
        FROM reviews
        WHERE created_at >= :future_limit
    ) violations
) ranked
WHERE rn <= :max_examples
ORDER BY rule, rn
