-- Pair mining, phases 1-3. Runs unchanged on DuckDB and Spark (see sql_engine.py).
-- Inputs: events (the window's partitions), items (item_id, creator_id, language, duration_s, items_dt).

-- name: labeled
-- Phase 1a: one row per (client, item) over the window; completion is total watch / duration.
-- Watch time is summed as whole milliseconds so the sum is exact (same bits on every engine; a
-- DECIMAL sum is as exact but slower).
-- Events are repartitioned by client first (a hint to Spark, a comment to DuckDB): the per-client
-- aggregate then needs no exchange of its own, and the result stays partitioned by client, so the
-- per-client statements after it (client_labels, the positives' window) shuffle nothing.
SELECT user_id, item_id, events, watch_time_s, watch_time_s / duration_s AS completion, liked,
       CASE WHEN watch_time_s / duration_s > :positive_completion OR liked THEN 'positive'
            WHEN watch_time_s < :negative_watch_s OR watch_time_s / duration_s < :negative_completion THEN 'negative'
            ELSE 'neutral' END AS label
FROM (
    SELECT user_id, item_id,
           count(*) AS events,
           CAST(sum(CAST(round(watch_time_s * 1000) AS BIGINT)) AS DOUBLE) / 1000 AS watch_time_s,
           max(duration_s) AS duration_s,
           bool_or(liked) AS liked
    FROM (SELECT /*+ REPARTITION(user_id) */ * FROM events) by_user
    GROUP BY user_id, item_id
) agg

-- name: client_labels
-- Per client: positives and labelled (non-neutral) rows, for the positive-share filter.
SELECT user_id,
       count(CASE WHEN label = 'positive' THEN 1 END) AS n_pos,
       count(*) AS n_labeled
FROM labeled
WHERE label <> 'neutral'
GROUP BY user_id

-- name: pair_interactions
-- Phase 1b: drop neutral rows and clients whose positive share Pos / (Pos + Neg) is too high.
SELECT l.user_id, l.item_id, l.label, l.events, l.watch_time_s, l.completion, l.liked
FROM labeled l
JOIN client_labels c ON l.user_id = c.user_id
WHERE l.label <> 'neutral'
  AND CAST(c.n_pos AS DOUBLE) / c.n_labeled <= :max_positive_share

-- name: labeled_stats
SELECT count(*) AS interactions_aggregated,
       count(CASE WHEN label = 'neutral' THEN 1 END) AS removed_neutral,
       count(CASE WHEN label <> 'neutral' THEN 1 END) AS labeled_rows,
       (SELECT count(*) FROM client_labels) AS labeled_clients
FROM labeled

-- name: interaction_stats
SELECT count(*) AS interactions,
       count(DISTINCT user_id) AS interaction_clients,
       count(CASE WHEN label = 'positive' THEN 1 END) AS interactions_positive,
       count(CASE WHEN label = 'negative' THEN 1 END) AS interactions_negative
FROM pair_interactions

-- name: interaction_items
-- Phase 2: every item of phase 1 with its metadata; known = false means not in items up to dt.
SELECT p.item_id, p.interactions, p.clients,
       i.creator_id, i.language, i.duration_s, i.items_dt,
       i.item_id IS NOT NULL AS known
FROM (
    SELECT item_id, count(*) AS interactions, count(*) AS clients  -- one row per (client, item)
    FROM pair_interactions
    GROUP BY item_id
) p
LEFT JOIN (
    SELECT item_id, creator_id, language, duration_s, items_dt
    FROM (
        SELECT item_id, creator_id, language, duration_s, items_dt,
               row_number() OVER (PARTITION BY item_id ORDER BY items_dt DESC) AS version
        FROM items
    ) v
    WHERE version = 1
) i ON p.item_id = i.item_id

-- name: pair_items
SELECT item_id, creator_id, language, duration_s, items_dt, interactions, clients
FROM interaction_items
WHERE known

-- name: pair_items_quarantine
SELECT item_id, interactions, clients, 'unknown item_id' AS reason
FROM interaction_items
WHERE NOT known

-- name: positives
-- Phase 3a: positives of known items; a client with more than :cap keeps a deterministic
-- pseudo-random :cap of them (ordered by md5 of client, item and seed; identical on both engines).
WITH pos AS (
    SELECT user_id, item_id, count(*) OVER (PARTITION BY user_id) AS n_pos
    FROM pair_interactions
    WHERE label = 'positive' AND item_id IN (SELECT item_id FROM interaction_items WHERE known)
)
SELECT user_id, item_id, n_pos, false AS capped
FROM pos
WHERE n_pos <= :cap
UNION ALL
SELECT user_id, item_id, n_pos, true AS capped
FROM (
    SELECT user_id, item_id, n_pos,
           row_number() OVER (
               PARTITION BY user_id
               ORDER BY md5(concat(CAST(user_id AS STRING), '/', CAST(item_id AS STRING), :salt)), item_id
           ) AS draw
    FROM pos
    WHERE n_pos > :cap
) ranked
WHERE draw <= :cap

-- name: positive_stats
SELECT (SELECT count(*) FROM pair_interactions
        WHERE label = 'positive' AND item_id IN (SELECT item_id FROM interaction_items WHERE known)
       ) AS positives_before_cap,
       count(*) AS positives_kept,
       count(DISTINCT CASE WHEN capped THEN user_id END) AS clients_capped
FROM positives

-- name: negative_sessions
-- Phase 3b: the sessions in which each negative (client, item) of a known item was seen.
SELECT DISTINCT e.user_id, e.session_id, e.item_id
FROM events e
JOIN pair_interactions p ON e.user_id = p.user_id AND e.item_id = p.item_id
WHERE p.label = 'negative' AND p.item_id IN (SELECT item_id FROM interaction_items WHERE known)

-- name: positive_pair_counts
-- Phase 3c: two positives of one client; item1 < item2 rules out self and mirrored pairs. Each
-- (client, item) is one row of positives, so count(*) counts distinct clients. The heaviest
-- aggregation: run in slices of item1 (materialize_sliced), and no pair_type string in the key
-- (that alone costs ~25%).
SELECT a.item_id AS item1, b.item_id AS item2, count(*) AS num_clients
FROM positives a
JOIN positives b ON a.user_id = b.user_id AND a.item_id < b.item_id
WHERE ((a.item_id % :slices) + :slices) % :slices = :slice
GROUP BY a.item_id, b.item_id

-- name: negative_pair_counts
-- Phase 3d: two negatives in one session of a client, counted once per client.
SELECT item1, item2, count(*) AS num_clients
FROM (
    SELECT DISTINCT a.item_id AS item1, b.item_id AS item2, a.user_id
    FROM negative_sessions a
    JOIN negative_sessions b ON a.user_id = b.user_id AND a.session_id = b.session_id AND a.item_id < b.item_id
) pair_clients
GROUP BY item1, item2

-- name: candidate_stats
SELECT 'negative' AS pair_type, count(*) AS candidates,
       count(CASE WHEN num_clients >= :min_clients THEN 1 END) AS kept
FROM negative_pair_counts
UNION ALL
SELECT 'positive', count(*), count(CASE WHEN num_clients >= :min_clients THEN 1 END)
FROM positive_pair_counts

-- name: pairs
-- Kept pairs by item ids. Each item's row in pair_items (where its content vector sits) is found by
-- the caller in the sorted ids: a row_number() over all items would be one unpartitioned window on
-- Spark. Outputs are put in order by SqlEngine.query(order_by=...), not by ORDER BY.
SELECT item1, item2, pair_type, num_clients
FROM (
    SELECT item1, item2, 'negative' AS pair_type, num_clients
    FROM negative_pair_counts
    WHERE num_clients >= :min_clients
    UNION ALL
    SELECT item1, item2, 'positive' AS pair_type, num_clients
    FROM positive_pair_counts
    WHERE num_clients >= :min_clients
) kept

-- name: pair_interactions_rows
SELECT * FROM pair_interactions
