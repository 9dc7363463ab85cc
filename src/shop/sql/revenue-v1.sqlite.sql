-- Version 1 of the table projection shop.revenue (src/shop/revenue.rs):
-- each order's product and day, recorded when it is placed, and the
-- revenue per product and day, from the payments captured and refunded.
CREATE TABLE shop_order_lines_v1 (
    order_id TEXT PRIMARY KEY,
    sku TEXT NOT NULL,
    day TEXT NOT NULL
);

CREATE TABLE shop_revenue_v1 (
    sku TEXT NOT NULL,
    day TEXT NOT NULL,
    orders INTEGER NOT NULL,
    revenue INTEGER NOT NULL,
    PRIMARY KEY (sku, day)
);

CREATE INDEX shop_revenue_v1_day ON shop_revenue_v1 (day, revenue);
