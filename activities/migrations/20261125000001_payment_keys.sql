-- A payment key belongs to one order. The key comes from the client (the PG's checkout hands
-- it to the browser), so payflow binds it to the first order it is presented for and refuses
-- it for any other: a key of order A can never make payflow confirm, void or refund at the PG
-- on behalf of order B. The primary key settles a race between two requests.
CREATE TABLE payment.payment_keys (
    payment_key TEXT PRIMARY KEY,
    order_id    TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX payment_keys_order ON payment.payment_keys (order_id);

-- Keys of payments made before the binding existed belong to their first order.
INSERT INTO payment.payment_keys (payment_key, order_id, created_at)
SELECT DISTINCT ON (payment_key) payment_key, order_id, created_at
  FROM payment.payments
 ORDER BY payment_key, created_at
ON CONFLICT (payment_key) DO NOTHING;
