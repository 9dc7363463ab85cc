-- Pending deadlines: one per stream, name and key, written in the
-- transaction of the decision that scheduled it and deleted by the one
-- that cancels, replaces or fires it. Times are microseconds since the
-- Unix epoch, like the events' recorded_at. `shard` is the stream's hash
-- (its segment of N is shard % N); `fire_at` is when it fires next: when
-- it is due, or after a failed fire, the retry's time. A deadline whose
-- fires kept failing is parked.
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
    shard INTEGER NOT NULL,
    fire_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    parked INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (aggregate_type, aggregate_id, name, key)
);
CREATE INDEX {p}deadlines_firing ON {p}deadlines (fire_at, deadline_id) WHERE parked = 0;
