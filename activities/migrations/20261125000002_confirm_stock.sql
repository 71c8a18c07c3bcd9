-- Stock confirmation in one round trip (it was five: BEGIN, lock, a decrement per line, mark,
-- COMMIT). The statement is its own transaction: the reservation rows are locked in product
-- order, and only when every line is RESERVED or CONFIRMED and at least one is RESERVED is each
-- product's stock decremented and every line marked CONFIRMED. A product short of stock raises
-- `not enough stock of <product>` (SQLSTATE PYF01), which undoes every decrement made before
-- it. Answers the lines as they were found, so the caller tells a missing, released or expired
-- reservation (nothing changed) from a confirmation (now or before).
CREATE FUNCTION product.confirm_stock(p_order_id TEXT, p_payment_id TEXT)
RETURNS TABLE (product_id TEXT, quantity INTEGER, status TEXT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    line product.stock_reservations%ROWTYPE;
    found_lines product.stock_reservations[] := '{}';
    confirmable BOOLEAN := true;
    reserved BOOLEAN := false;
BEGIN
    FOR line IN
        SELECT * FROM product.stock_reservations r
         WHERE r.order_id = p_order_id ORDER BY r.product_id FOR UPDATE
    LOOP
        found_lines := found_lines || line;
        confirmable := confirmable AND line.status IN ('RESERVED', 'CONFIRMED');
        reserved := reserved OR line.status = 'RESERVED';
    END LOOP;
    IF confirmable AND reserved THEN
        FOREACH line IN ARRAY found_lines LOOP
            UPDATE product.products p SET stock = p.stock - line.quantity, updated_at = now()
             WHERE p.product_id = line.product_id AND p.stock >= line.quantity;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'not enough stock of %', line.product_id USING ERRCODE = 'PYF01';
            END IF;
        END LOOP;
        UPDATE product.stock_reservations r
           SET status = 'CONFIRMED', payment_id = p_payment_id, updated_at = now()
         WHERE r.order_id = p_order_id;
    END IF;
    RETURN QUERY SELECT l.product_id, l.quantity, l.status FROM unnest(found_lines) l;
END;
$$;
