-- The values of an indexed view's declared fields, as a JSON object
-- computed from the view type's fields: what queries filter, order and
-- page by (NULL for views that are not indexed).
ALTER TABLE {p}views ADD COLUMN keys JSONB;
