-- Version 2 of table_test.totals: each customer's largest order too.
CREATE TABLE table_test_totals_v2 (
    customer TEXT PRIMARY KEY,
    orders BIGINT NOT NULL,
    total BIGINT NOT NULL,
    largest BIGINT NOT NULL
);
