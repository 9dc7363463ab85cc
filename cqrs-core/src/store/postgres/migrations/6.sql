-- Pending deadlines: one per stream, name and key, written in the
-- transaction of the decision that scheduled it and deleted by the one
-- that cancels, replaces or fires it. `shard` is the stream's hash (its
-- segment of N is shard % N); `fire_at` is when it fires next: when it is
-- due, or after a failed fire, the retry's time. A deadline whose fires
-- kept failing is parked.
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
    shard BIGINT NOT NULL,
    fire_at TIMESTAMPTZ NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    parked BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (aggregate_type, aggregate_id, name, key)
);
CREATE INDEX {p}deadlines_firing ON {p}deadlines (fire_at, deadline_id) WHERE NOT parked;
