-- Version 2 of table_test.totals: each customer's largest order too.
CREATE TABLE table_test_totals_v2 (
    customer TEXT PRIMARY KEY,
    orders INTEGER NOT NULL,
    total INTEGER NOT NULL,
    largest INTEGER NOT NULL
);
