-- Each event keeps its own command id (its metadata's), so a consumer can
-- record a broker's messages of one stream as one batch and still find
-- each message again by its id. The functions take one command id per
-- event, last, so a binary that still passes one per batch finds no
-- function instead of writing the wrong ids; a batch is a duplicate when
-- its first event's command id is recorded, as before.
DROP FUNCTION {p}append(TEXT, TEXT, BIGINT, UUID[], TEXT[], INTEGER[], TEXT[], TEXT[], UUID);
DROP FUNCTION {p}append_group(TEXT[], TEXT[], BIGINT[], UUID[], INTEGER[], UUID[], TEXT[],
                              INTEGER[], TEXT[], TEXT[]);
DROP FUNCTION {p}reuses_event_id(UUID[]);

CREATE FUNCTION {p}append(
    p_aggregate_type TEXT,
    p_aggregate_id TEXT,
    p_expected BIGINT,
    p_event_ids UUID[],
    p_names TEXT[],
    p_versions INTEGER[],
    p_metadata TEXT[],
    p_payloads TEXT[],
    p_command_ids UUID[]
) RETURNS TABLE (actual BIGINT, first_position BIGINT, recorded_at TIMESTAMPTZ, duplicate BOOLEAN)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_head BIGINT;
    v_actual BIGINT;
    v_now TIMESTAMPTZ := clock_timestamp();
BEGIN
    SELECT h.position INTO v_head FROM {p}log_head h WHERE h.id = 1 FOR UPDATE;
    IF p_command_ids[1] IS NOT NULL AND EXISTS (
        SELECT 1 FROM {p}events e
        WHERE e.aggregate_type = p_aggregate_type AND e.aggregate_id = p_aggregate_id
          AND e.command_id = p_command_ids[1]
    ) THEN
        RETURN QUERY SELECT NULL::BIGINT, NULL::BIGINT, NULL::TIMESTAMPTZ, TRUE;
        RETURN;
    END IF;
    v_actual := coalesce((
        SELECT e.sequence FROM {p}events e
        WHERE e.aggregate_type = p_aggregate_type AND e.aggregate_id = p_aggregate_id
        ORDER BY e.sequence DESC LIMIT 1
    ), 0);
    IF v_actual <> p_expected THEN
        RETURN QUERY SELECT v_actual, NULL::BIGINT, NULL::TIMESTAMPTZ, FALSE;
        RETURN;
    END IF;
    INSERT INTO {p}events (position, aggregate_type, aggregate_id, sequence, event_id,
                           event_name, event_version, recorded_at, metadata, payload, command_id)
    SELECT v_head + b.ord, p_aggregate_type, p_aggregate_id, p_expected + b.ord, b.event_id,
           b.name, b.version, v_now, b.metadata::JSONB, b.payload::JSONB, b.command_id
    FROM unnest(p_event_ids, p_names, p_versions, p_metadata, p_payloads, p_command_ids)
         WITH ORDINALITY AS b(event_id, name, version, metadata, payload, command_id, ord);
    UPDATE {p}log_head SET position = v_head + cardinality(p_event_ids) WHERE id = 1;
    PERFORM pg_notify('{p}appended', (v_head + cardinality(p_event_ids))::TEXT);
    RETURN QUERY SELECT v_actual, v_head + 1, v_now, FALSE;
END
$$;

-- As version 3's, with the command ids per event, and without probing
-- each event id before the insert (10% of a group of 8 one-event batches
-- in pgbench): an event id the log or the group already holds fails the
-- insert, so the whole group, and the store writes its batches one by one,
-- where the unique index refuses the one that reuses it.
CREATE FUNCTION {p}append_group(
    p_types TEXT[],
    p_ids TEXT[],
    p_expected BIGINT[],
    p_counts INTEGER[],
    p_event_ids UUID[],
    p_names TEXT[],
    p_versions INTEGER[],
    p_metadata TEXT[],
    p_payloads TEXT[],
    p_command_ids UUID[]
) RETURNS TABLE (actual BIGINT, first_position BIGINT, recorded_at TIMESTAMPTZ, outcome TEXT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_head BIGINT;
    v_start BIGINT;
    v_actual BIGINT;
    v_now TIMESTAMPTZ := clock_timestamp();
    v_first INTEGER := 1;
    v_last INTEGER;
    -- The events to insert: their index in the arrays, batch and position.
    v_events INTEGER[] := '{}';
    v_batches INTEGER[] := '{}';
    v_positions BIGINT[] := '{}';
    v_sequences BIGINT[] := '{}';
BEGIN
    -- The head row is the log's write lock: held until commit, so
    -- positions become visible in the order they are handed out.
    SELECT h.position INTO v_head FROM {p}log_head h WHERE h.id = 1 FOR UPDATE;
    v_start := v_head;
    FOR i IN 1 .. coalesce(cardinality(p_types), 0) LOOP
        v_last := v_first + p_counts[i] - 1;
        IF p_command_ids[v_first] IS NOT NULL AND EXISTS (
            SELECT 1 FROM {p}events e
            WHERE e.aggregate_type = p_types[i] AND e.aggregate_id = p_ids[i]
              AND e.command_id = p_command_ids[v_first]
        ) THEN
            RETURN QUERY SELECT NULL::BIGINT, NULL::BIGINT, NULL::TIMESTAMPTZ, 'duplicate'::TEXT;
        ELSE
            v_actual := coalesce((
                SELECT e.sequence FROM {p}events e
                WHERE e.aggregate_type = p_types[i] AND e.aggregate_id = p_ids[i]
                ORDER BY e.sequence DESC LIMIT 1
            ), 0);
            IF v_actual <> p_expected[i] THEN
                RETURN QUERY SELECT v_actual, NULL::BIGINT, NULL::TIMESTAMPTZ, 'conflict'::TEXT;
            ELSE
                FOR k IN v_first .. v_last LOOP
                    v_events := v_events || k;
                    v_batches := v_batches || i;
                    v_positions := v_positions || (v_head + k - v_first + 1);
                    v_sequences := v_sequences || (p_expected[i] + k - v_first + 1);
                END LOOP;
                RETURN QUERY SELECT v_actual, v_head + 1, v_now, 'appended'::TEXT;
                v_head := v_head + p_counts[i];
            END IF;
        END IF;
        v_first := v_last + 1;
    END LOOP;
    IF v_head > v_start THEN
        -- One statement for every batch that passed its checks. An event
        -- id used already, or one stream's sequence taken twice, fails it
        -- whole; the store then writes the group's batches one by one.
        INSERT INTO {p}events (position, aggregate_type, aggregate_id, sequence, event_id,
                               event_name, event_version, recorded_at, metadata, payload, command_id)
        SELECT n.position, p_types[n.batch], p_ids[n.batch], n.sequence,
               p_event_ids[n.event], p_names[n.event], p_versions[n.event], v_now,
               p_metadata[n.event]::JSONB, p_payloads[n.event]::JSONB, p_command_ids[n.event]
        FROM unnest(v_events, v_batches, v_positions, v_sequences) AS n(event, batch, position, sequence);
        UPDATE {p}log_head SET position = v_head WHERE id = 1;
        PERFORM pg_notify('{p}appended', v_head::TEXT);
    END IF;
END
$$;
