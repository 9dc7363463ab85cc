-- A migration that fails half-way (tests/test_table_projections.rs): the
-- first statement must not stay behind.
CREATE TABLE table_test_broken_v1 (id TEXT PRIMARY KEY);
CREATE TABLE table_test_broken_v1 (id TEXT PRIMARY KEY);
