-- Pending deadlines: one per stream, name and key, written in the
-- transaction of the decision that scheduled it and deleted by the one
-- that cancels, replaces or fires it.
CREATE TABLE {p}deadlines (
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    deadline_id UUID NOT NULL UNIQUE,
    due_at TIMESTAMPTZ NOT NULL,
    version INTEGER NOT NULL,
    payload JSONB NOT NULL,
    metadata JSONB NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, name, key)
);
CREATE INDEX {p}deadlines_due ON {p}deadlines (due_at, deadline_id);
