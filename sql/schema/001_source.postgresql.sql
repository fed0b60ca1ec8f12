-- Source relations of the warehouse contract (PostgreSQL). Created unqualified, so they
-- land in the first schema of the search_path (the source schema, `public` by default).
CREATE TABLE IF NOT EXISTS users (
    user_id   TEXT PRIMARY KEY,
    signup_at TIMESTAMP NOT NULL,
    country   TEXT,
    segment   TEXT
);

CREATE TABLE IF NOT EXISTS orders (
    order_id   TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    ordered_at TIMESTAMP NOT NULL,
    amount     NUMERIC(12, 2) NOT NULL CHECK (amount >= 0),
    items      INTEGER NOT NULL CHECK (items >= 1),
    category   TEXT,
    status     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_user_time ON orders (user_id, ordered_at);
CREATE INDEX IF NOT EXISTS orders_time ON orders (ordered_at);

CREATE TABLE IF NOT EXISTS events (
    user_id     TEXT NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    event_type  TEXT NOT NULL CHECK (event_type IN ('view', 'click', 'add_to_cart', 'search', 'wishlist')),
    category    TEXT,
    query       TEXT,
    price       NUMERIC(12, 2)
);
CREATE INDEX IF NOT EXISTS events_user_time ON events (user_id, occurred_at);

CREATE TABLE IF NOT EXISTS reviews (
    user_id    TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    rating     INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body       TEXT
);
CREATE INDEX IF NOT EXISTS reviews_user_time ON reviews (user_id, created_at);
