-- Command ids, and notifications of appends.
ALTER TABLE {p}events ADD COLUMN command_id UUID;
CREATE INDEX {p}events_command ON {p}events (aggregate_type, aggregate_id, command_id)
    WHERE command_id IS NOT NULL;

DROP FUNCTION {p}append(TEXT, TEXT, BIGINT, UUID[], TEXT[], INTEGER[], TEXT[], TEXT[]);

-- As version 1, and: a batch of a command id the stream already holds is
-- refused (duplicate = true), and a commit notifies `{p}appended` so
-- event processors in other processes wake up.
CREATE FUNCTION {p}append(
    p_aggregate_type TEXT,
    p_aggregate_id TEXT,
    p_expected BIGINT,
    p_event_ids UUID[],
    p_names TEXT[],
    p_versions INTEGER[],
    p_metadata TEXT[],
    p_payloads TEXT[],
    p_command_id UUID
) RETURNS TABLE (actual BIGINT, first_position BIGINT, recorded_at TIMESTAMPTZ, duplicate BOOLEAN)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_head BIGINT;
    v_actual BIGINT;
    v_now TIMESTAMPTZ := clock_timestamp();
BEGIN
    SELECT h.position INTO v_head FROM {p}log_head h WHERE h.id = 1 FOR UPDATE;
    IF p_command_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM {p}events e
        WHERE e.aggregate_type = p_aggregate_type AND e.aggregate_id = p_aggregate_id
          AND e.command_id = p_command_id
    ) THEN
        RETURN QUERY SELECT NULL::BIGINT, NULL::BIGINT, NULL::TIMESTAMPTZ, TRUE;
        RETURN;
    END IF;
    SELECT coalesce(max(e.sequence), 0) INTO v_actual FROM {p}events e
        WHERE e.aggregate_type = p_aggregate_type AND e.aggregate_id = p_aggregate_id;
    IF v_actual <> p_expected THEN
        RETURN QUERY SELECT v_actual, NULL::BIGINT, NULL::TIMESTAMPTZ, FALSE;
        RETURN;
    END IF;
    INSERT INTO {p}events (position, aggregate_type, aggregate_id, sequence, event_id,
                           event_name, event_version, recorded_at, metadata, payload, command_id)
    SELECT v_head + b.ord, p_aggregate_type, p_aggregate_id, p_expected + b.ord, b.event_id,
           b.name, b.version, v_now, b.metadata::JSONB, b.payload::JSONB, p_command_id
    FROM unnest(p_event_ids, p_names, p_versions, p_metadata, p_payloads)
         WITH ORDINALITY AS b(event_id, name, version, metadata, payload, ord);
    UPDATE {p}log_head SET position = v_head + cardinality(p_event_ids) WHERE id = 1;
    PERFORM pg_notify('{p}appended', (v_head + cardinality(p_event_ids))::TEXT);
    RETURN QUERY SELECT v_actual, v_head + 1, v_now, FALSE;
END
$$;
