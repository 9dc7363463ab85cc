-- The table of version 1 of the `revenue` projection in the rustdoc of
-- cqrs_core::view::TableProjection.
CREATE TABLE revenue_by_sku_v1 (
    sku TEXT PRIMARY KEY,
    revenue INTEGER NOT NULL
);
