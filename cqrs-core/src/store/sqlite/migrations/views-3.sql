-- Segments: each processor's checkpoints, one per segment, with the claim
-- of the node that owns it (lease end in Unix milliseconds) and its fencing
-- token. Existing checkpoints become segment 0 of 1.
CREATE TABLE {p}segments (
    processor TEXT NOT NULL,
    segment INTEGER NOT NULL,
    segments INTEGER NOT NULL,
    position BIGINT NOT NULL DEFAULT 0,
    owner TEXT,
    token BIGINT NOT NULL DEFAULT 0,
    lease_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (processor, segment)
);
INSERT INTO {p}segments (processor, segment, segments, position)
    SELECT processor, 0, 1, position FROM {p}checkpoints;
DROP TABLE {p}checkpoints;

-- The nodes that run each processor, for sharing its segments evenly.
CREATE TABLE {p}nodes (
    processor TEXT NOT NULL,
    node TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    PRIMARY KEY (processor, node)
);

-- Events a processor set aside after its retries, and the decisions about them.
CREATE TABLE {p}parked_events (
    processor TEXT NOT NULL,
    position BIGINT NOT NULL,
    segment INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    error TEXT,
    attempts INTEGER NOT NULL,
    parked_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    decided_at BIGINT,
    PRIMARY KEY (processor, position)
);
CREATE INDEX {p}parked_events_stream ON {p}parked_events (processor, aggregate_type, aggregate_id);

-- The version of each projection that queries read.
CREATE TABLE {p}projections (
    name TEXT PRIMARY KEY,
    serving TEXT NOT NULL
);

-- Each view's revision, checked when a batch writes it, so two segments
-- changing one view cannot lose an update.
ALTER TABLE {p}views ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;
