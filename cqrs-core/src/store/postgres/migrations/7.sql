-- A process manager's fire claims its deadline before it sends its
-- commands (a cancel leaves a claimed deadline be; `fire_at` is then when
-- the claim runs out), and its changes carry an origin that orders them
-- when its events are handled out of order: each deadline's last origin
-- is kept after it fired or was cancelled (NULL: a row only locked).
ALTER TABLE {p}deadlines ADD COLUMN claimed BOOLEAN NOT NULL DEFAULT FALSE;
CREATE TABLE {p}deadline_origins (
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    origin BIGINT,
    PRIMARY KEY (aggregate_type, aggregate_id, name, key)
);
