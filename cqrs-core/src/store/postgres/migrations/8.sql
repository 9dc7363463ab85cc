-- Tags, for event queries across streams (consistency boundaries): one
-- row per tag of each tagged event, so the events of a tag after a
-- position are one range of the primary key (an untagged event has none,
-- and its append writes none). The functions take each event's tags
-- last, as a JSON array of `key:value` texts or NULL, so a binary without
-- them finds no function.
CREATE TABLE {p}event_tags (
    tag TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (tag, position)
);

DROP FUNCTION {p}append(TEXT, TEXT, BIGINT, UUID[], TEXT[], INTEGER[], TEXT[], TEXT[], UUID[]);
DROP FUNCTION {p}append_group(TEXT[], TEXT[], BIGINT[], INTEGER[], UUID[], TEXT[], INTEGER[],
                              TEXT[], TEXT[], UUID[]);

-- As version 5's, with each event's tags.
CREATE FUNCTION {p}append(
    p_aggregate_type TEXT,
    p_aggregate_id TEXT,
    p_expected BIGINT,
    p_event_ids UUID[],
    p_names TEXT[],
    p_versions INTEGER[],
    p_metadata TEXT[],
    p_payloads TEXT[],
    p_command_ids UUID[],
    p_tags TEXT[]
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
    IF cardinality(array_remove(p_tags, NULL)) > 0 THEN
        INSERT INTO {p}event_tags (tag, position)
        SELECT t.tag, v_head + b.ord
        FROM unnest(p_tags) WITH ORDINALITY AS b(tags, ord),
             jsonb_array_elements_text(b.tags::JSONB) AS t(tag)
        WHERE b.tags IS NOT NULL;
    END IF;
    UPDATE {p}log_head SET position = v_head + cardinality(p_event_ids) WHERE id = 1;
    PERFORM pg_notify('{p}appended', (v_head + cardinality(p_event_ids))::TEXT);
    RETURN QUERY SELECT v_actual, v_head + 1, v_now, FALSE;
END
$$;

-- As version 5's, with each event's tags. An event id the log or the
-- group already holds fails the insert, so the whole group, and the store
-- writes its batches one by one, where the unique index refuses the one
-- that reuses it.
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
    p_command_ids UUID[],
    p_tags TEXT[]
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
        IF cardinality(array_remove(p_tags, NULL)) > 0 THEN
            INSERT INTO {p}event_tags (tag, position)
            SELECT t.tag, n.position
            FROM unnest(v_events, v_positions) AS n(event, position),
                 jsonb_array_elements_text(p_tags[n.event]::JSONB) AS t(tag)
            WHERE p_tags[n.event] IS NOT NULL;
        END IF;
        UPDATE {p}log_head SET position = v_head WHERE id = 1;
        PERFORM pg_notify('{p}appended', v_head::TEXT);
    END IF;
END
$$;

-- A group of which some batches are conditional appends (a decision's
-- over a consistency boundary): p_afters and p_queries hold each batch's
-- position read and query (NULL for a plain batch, checked as append_group
-- checks it). The log head's lock comes first; each batch is then checked
-- and inserted in turn, so a batch's check sees the batches before it in
-- the group, and every statement sees all appends committed before it
-- began (none can commit while the lock is held). A conditional batch is
-- appended at the end of its stream unless an event its query selects came
-- after its position ('changed', with the first such position as actual).
-- p_queries[i] is a JSON array of items, each {"names": [..], "tags": [..]}
-- ("names" left out for any name).
CREATE FUNCTION {p}append_group_if(
    p_types TEXT[],
    p_ids TEXT[],
    p_expected BIGINT[],
    p_counts INTEGER[],
    p_event_ids UUID[],
    p_names TEXT[],
    p_versions INTEGER[],
    p_metadata TEXT[],
    p_payloads TEXT[],
    p_command_ids UUID[],
    p_tags TEXT[],
    p_afters BIGINT[],
    p_queries JSONB[]
) RETURNS TABLE (actual BIGINT, first_position BIGINT, recorded_at TIMESTAMPTZ, outcome TEXT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_head BIGINT;
    v_start BIGINT;
    v_actual BIGINT;
    v_item JSONB;
    v_found BIGINT;
    v_changed BIGINT;
    v_now TIMESTAMPTZ := clock_timestamp();
    v_first INTEGER := 1;
    v_last INTEGER;
BEGIN
    SELECT h.position INTO v_head FROM {p}log_head h WHERE h.id = 1 FOR UPDATE;
    v_start := v_head;
    FOR i IN 1 .. coalesce(cardinality(p_types), 0) LOOP
        v_last := v_first + p_counts[i] - 1;
        v_changed := NULL;
        v_actual := coalesce((
            SELECT e.sequence FROM {p}events e
            WHERE e.aggregate_type = p_types[i] AND e.aggregate_id = p_ids[i]
            ORDER BY e.sequence DESC LIMIT 1
        ), 0);
        IF p_command_ids[v_first] IS NOT NULL AND EXISTS (
            SELECT 1 FROM {p}events e
            WHERE e.aggregate_type = p_types[i] AND e.aggregate_id = p_ids[i]
              AND e.command_id = p_command_ids[v_first]
        ) THEN
            RETURN QUERY SELECT NULL::BIGINT, NULL::BIGINT, NULL::TIMESTAMPTZ, 'duplicate'::TEXT;
        ELSIF p_queries[i] IS NULL AND v_actual <> p_expected[i] THEN
            RETURN QUERY SELECT v_actual, NULL::BIGINT, NULL::TIMESTAMPTZ, 'conflict'::TEXT;
        ELSE
            -- Item by item: each statement small enough to plan well (one
            -- over all items at once was costed, by the items' unknown
            -- count, into JIT compilation that took 350 ms).
            IF p_queries[i] IS NOT NULL THEN
                FOR v_item IN SELECT q.item FROM jsonb_array_elements(p_queries[i]) AS q(item) LOOP
                    IF jsonb_array_length(v_item->'tags') = 0 THEN
                        -- Names alone: the events after the read.
                        SELECT min(e.position) INTO v_found FROM {p}events e
                        WHERE e.position > p_afters[i]
                          AND (v_item->'names' IS NULL
                               OR e.event_name IN (SELECT jsonb_array_elements_text(v_item->'names')));
                    ELSE
                        -- The first tag's events after the read that carry
                        -- all of the item's tags.
                        SELECT min(e.position) INTO v_found
                        FROM {p}event_tags t JOIN {p}events e ON e.position = t.position
                        WHERE t.tag = v_item->'tags'->>0 AND t.position > p_afters[i]
                          AND (v_item->'names' IS NULL
                               OR e.event_name IN (SELECT jsonb_array_elements_text(v_item->'names')))
                          AND NOT EXISTS (
                              SELECT 1 FROM jsonb_array_elements_text(v_item->'tags') AS x(tag)
                              WHERE NOT EXISTS (SELECT 1 FROM {p}event_tags a
                                                WHERE a.tag = x.tag AND a.position = e.position));
                    END IF;
                    IF v_found IS NOT NULL AND (v_changed IS NULL OR v_found < v_changed) THEN
                        v_changed := v_found;
                    END IF;
                END LOOP;
            END IF;
            IF v_changed IS NOT NULL THEN
                RETURN QUERY SELECT v_changed, NULL::BIGINT, NULL::TIMESTAMPTZ, 'changed'::TEXT;
            ELSE
                INSERT INTO {p}events (position, aggregate_type, aggregate_id, sequence, event_id,
                                       event_name, event_version, recorded_at, metadata, payload,
                                       command_id)
                SELECT v_head + k - v_first + 1, p_types[i], p_ids[i], v_actual + k - v_first + 1,
                       p_event_ids[k], p_names[k], p_versions[k], v_now, p_metadata[k]::JSONB,
                       p_payloads[k]::JSONB, p_command_ids[k]
                FROM generate_series(v_first, v_last) AS k;
                INSERT INTO {p}event_tags (tag, position)
                SELECT t.tag, v_head + k - v_first + 1
                FROM generate_series(v_first, v_last) AS k,
                     jsonb_array_elements_text(p_tags[k]::JSONB) AS t(tag)
                WHERE p_tags[k] IS NOT NULL;
                RETURN QUERY SELECT v_actual, v_head + 1, v_now, 'appended'::TEXT;
                v_head := v_head + p_counts[i];
            END IF;
        END IF;
        v_first := v_last + 1;
    END LOOP;
    IF v_head > v_start THEN
        UPDATE {p}log_head SET position = v_head WHERE id = 1;
        PERFORM pg_notify('{p}appended', v_head::TEXT);
    END IF;
END
$$;
