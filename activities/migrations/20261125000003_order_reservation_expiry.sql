-- An order knows until when its stock is held: the API refuses to charge for an order whose
-- reservation has lapsed (its stock is gone, so the charge could only be refunded again).
-- NULL for an order created before this column, which the API then does not check.
ALTER TABLE orders.orders ADD COLUMN reservation_expires_at TIMESTAMPTZ;

UPDATE orders.orders o
   SET reservation_expires_at = r.expires_at
  FROM (SELECT order_id, min(expires_at) AS expires_at
          FROM product.stock_reservations
         WHERE order_id IN (SELECT order_id FROM orders.orders WHERE status = 'PAYMENT_WAIT')
         GROUP BY order_id) r
 WHERE r.order_id = o.order_id AND o.status = 'PAYMENT_WAIT';
