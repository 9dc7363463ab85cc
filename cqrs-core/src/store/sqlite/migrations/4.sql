-- A process manager's fire claims its deadline before it sends its
-- commands (a cancel leaves a claimed deadline be; `fire_at` is then when
-- the claim runs out), and its changes carry an origin that orders them
-- when its events are handled out of order: each deadline's last origin
-- is kept after it fired or was cancelled.
ALTER TABLE {p}deadlines ADD COLUMN claimed INTEGER NOT NULL DEFAULT 0;
CREATE TABLE {p}deadline_origins (
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    origin INTEGER NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, name, key)
);
