-- The table of table_test.rogue, whose handler ends its batch's transaction.
CREATE TABLE table_test_rogue_v1 (id TEXT PRIMARY KEY);
