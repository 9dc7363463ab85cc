-- The log, its head (the write lock) and snapshots, and the append function.
CREATE TABLE {p}events (
    position BIGINT NOT NULL UNIQUE,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    event_id UUID NOT NULL UNIQUE,
    event_name TEXT NOT NULL,
    event_version INTEGER NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    metadata JSONB NOT NULL,
    payload JSONB NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- The last position handed out. Its row is the log's write lock.
CREATE TABLE {p}log_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    position BIGINT NOT NULL
);
INSERT INTO {p}log_head (id, position) VALUES (1, 0);

CREATE TABLE {p}snapshots (
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    schema_version INTEGER NOT NULL,
    state JSONB NOT NULL,
    taken_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Appends a batch to one stream if it is at p_expected. Returns the
-- stream's version and, when appended, the first position and the time.
-- Positions are handed out while the head row is locked, and the lock is
-- held until commit, so they become visible in order: a reader resuming
-- after the last position it saw cannot miss one committed later.
CREATE FUNCTION {p}append(
    p_aggregate_type TEXT,
    p_aggregate_id TEXT,
    p_expected BIGINT,
    p_event_ids UUID[],
    p_names TEXT[],
    p_versions INTEGER[],
    p_metadata TEXT[],
    p_payloads TEXT[]
) RETURNS TABLE (actual BIGINT, first_position BIGINT, recorded_at TIMESTAMPTZ)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_head BIGINT;
    v_actual BIGINT;
    v_now TIMESTAMPTZ := clock_timestamp();
BEGIN
    SELECT h.position INTO v_head FROM {p}log_head h WHERE h.id = 1 FOR UPDATE;
    SELECT coalesce(max(e.sequence), 0) INTO v_actual FROM {p}events e
        WHERE e.aggregate_type = p_aggregate_type AND e.aggregate_id = p_aggregate_id;
    IF v_actual <> p_expected THEN
        RETURN QUERY SELECT v_actual, NULL::BIGINT, NULL::TIMESTAMPTZ;
        RETURN;
    END IF;
    INSERT INTO {p}events (position, aggregate_type, aggregate_id, sequence, event_id,
                           event_name, event_version, recorded_at, metadata, payload)
    SELECT v_head + b.ord, p_aggregate_type, p_aggregate_id, p_expected + b.ord, b.event_id,
           b.name, b.version, v_now, b.metadata::JSONB, b.payload::JSONB
    FROM unnest(p_event_ids, p_names, p_versions, p_metadata, p_payloads)
         WITH ORDINALITY AS b(event_id, name, version, metadata, payload, ord);
    UPDATE {p}log_head SET position = v_head + cardinality(p_event_ids) WHERE id = 1;
    RETURN QUERY SELECT v_actual, v_head + 1, v_now;
END
$$;
