-- Pending deadlines: one per stream, name and key, written in the
-- transaction of the decision that scheduled it and deleted by the one
-- that cancels, replaces or fires it. Times are microseconds since the
-- Unix epoch, like the events' recorded_at.
CREATE TABLE {p}deadlines (
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    deadline_id BLOB NOT NULL UNIQUE,
    due_at INTEGER NOT NULL,
    version INTEGER NOT NULL,
    payload TEXT NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, name, key)
);
CREATE INDEX {p}deadlines_due ON {p}deadlines (due_at, deadline_id);
