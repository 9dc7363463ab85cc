-- Table projections: the steps of each version's migrations that ran, with
-- a checksum of their text (a step changed after it ran is an error), and
-- the tables each version owns, by serving name. A SQL view under the
-- serving name reads the serving version's table.
CREATE TABLE {p}table_migrations (
    processor TEXT NOT NULL,
    step BIGINT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (processor, step)
);

CREATE TABLE {p}projection_tables (
    processor TEXT NOT NULL,
    name TEXT NOT NULL,
    versioned TEXT NOT NULL,
    PRIMARY KEY (processor, name)
);

-- The log the read side follows, by its first event's id: read models in a
-- database of their own are never built from another log.
CREATE TABLE {p}read_side (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    log_id TEXT NOT NULL
);
