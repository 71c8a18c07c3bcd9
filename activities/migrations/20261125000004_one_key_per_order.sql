-- An order's payment has one key: the first one presented for it. A second request for the same
-- order carrying another key, arriving before the first had reached the PG, used to bind its key
-- too; that key stayed bound to an order it never paid, and its own order could no longer pay
-- with it. Now the unique index settles such a race as the primary key settles two orders racing
-- for one key: the later request joins the order's payment under the order's key.
--
-- Orders that already hold more than one key keep the key their payment used, or else their
-- first; the others were never sent to the PG for them.
DELETE FROM payment.payment_keys AS k
 USING (SELECT pk.payment_key,
               row_number() OVER (
                   PARTITION BY pk.order_id
                   ORDER BY EXISTS (SELECT 1 FROM payment.payments AS p
                                     WHERE p.order_id = pk.order_id
                                       AND p.payment_key = pk.payment_key) DESC,
                            pk.created_at, pk.payment_key) AS rank
          FROM payment.payment_keys AS pk) AS ranked
 WHERE k.payment_key = ranked.payment_key AND ranked.rank > 1;

-- A payflow released before this migration, still running in a rolling deploy, gets a unique
-- violation (a retried error) where it would have bound a second key: the race this closes.
DROP INDEX payment.payment_keys_order;
CREATE UNIQUE INDEX payment_keys_order ON payment.payment_keys (order_id);
