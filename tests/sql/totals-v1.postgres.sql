-- Version 1 of table_test.totals (tests/test_table_projections.rs): each
-- customer's orders and their sum, and one row per order, whose primary
-- key fails an order applied twice.
CREATE TABLE table_test_totals_v1 (
    customer TEXT PRIMARY KEY,
    orders BIGINT NOT NULL,
    total BIGINT NOT NULL
);

CREATE TABLE table_test_orders_v1 (
    order_id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    total BIGINT NOT NULL
);
