-- payflow: one database, one schema per owning service. An activity touches only its own
-- service's schema.

CREATE SCHEMA IF NOT EXISTS product;
CREATE SCHEMA IF NOT EXISTS orders;
CREATE SCHEMA IF NOT EXISTS payment;

-- Product service ---------------------------------------------------------------------------

CREATE TABLE product.products (
    product_id  TEXT PRIMARY KEY,
    name        TEXT        NOT NULL,
    price       BIGINT      NOT NULL CHECK (price > 0),          -- won
    stock       INTEGER     NOT NULL CHECK (stock >= 0),         -- permanent stock, net of confirmed sales
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per order line. RESERVED while Redis holds the reservation; CONFIRMED once the stock
-- is permanent; RELEASED when a compensation gave it back; EXPIRED when the reservation ran out.
CREATE TABLE product.stock_reservations (
    order_id    TEXT        NOT NULL,
    product_id  TEXT        NOT NULL REFERENCES product.products (product_id),
    quantity    INTEGER     NOT NULL CHECK (quantity > 0),
    status      TEXT        NOT NULL CHECK (status IN ('RESERVED', 'CONFIRMED', 'RELEASED', 'EXPIRED')),
    expires_at  TIMESTAMPTZ NOT NULL,
    payment_id  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX stock_reservations_status ON product.stock_reservations (status);

-- Order service ------------------------------------------------------------------------------

CREATE TABLE orders.orders (
    order_id       TEXT PRIMARY KEY,
    user_id        TEXT        NOT NULL,
    status         TEXT        NOT NULL CHECK (status IN ('PAYMENT_WAIT', 'PAYMENT_COMPLETED', 'ORDER_COMPLETED', 'ORDER_CANCELLED')),
    total_amount   BIGINT      NOT NULL CHECK (total_amount > 0), -- won
    payment_id     TEXT,
    cancel_reason  TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at   TIMESTAMPTZ,
    cancelled_at   TIMESTAMPTZ
);
CREATE INDEX orders_user ON orders.orders (user_id);

CREATE TABLE orders.order_items (
    order_id    TEXT    NOT NULL REFERENCES orders.orders (order_id),
    product_id  TEXT    NOT NULL,
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    unit_price  BIGINT  NOT NULL CHECK (unit_price > 0),
    PRIMARY KEY (order_id, product_id)
);

-- Push notifications sent, by their deduplication id: a retried push is sent once.
CREATE TABLE orders.notifications (
    notification_id TEXT PRIMARY KEY,
    order_id        TEXT        NOT NULL,
    user_id         TEXT        NOT NULL,
    title           TEXT        NOT NULL,
    sent_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Payment service ----------------------------------------------------------------------------

CREATE TABLE payment.payments (
    payment_id          TEXT PRIMARY KEY,                       -- also the PG Idempotency-Key
    order_id            TEXT        NOT NULL UNIQUE,
    user_id             TEXT        NOT NULL,
    status              TEXT        NOT NULL CHECK (status IN ('IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED')),
    amount              BIGINT      NOT NULL CHECK (amount > 0), -- won
    method              TEXT        NOT NULL,
    payment_key         TEXT        NOT NULL,
    pg_approval_number  TEXT,
    approved_at         TIMESTAMPTZ,
    failure_code        TEXT,
    failure_message     TEXT,
    cancel_reason       TEXT,
    refund_reference    TEXT,
    refunded_by         TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
