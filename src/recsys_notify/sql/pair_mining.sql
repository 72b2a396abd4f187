-- Pair mining, phases 1-3. Runs unchanged on DuckDB and Spark (see sql_engine.py).
-- Inputs: events (the window's partitions), items (item_id, creator_id, language, duration_s, items_dt).

-- name: labeled
-- Phase 1a: one row per (client, item) over the window; completion is total watch / duration.
-- Watch time is summed as milliseconds in DECIMAL so the sum is exact (same bits on every engine).
SELECT user_id, item_id, events, watch_time_s, watch_time_s / duration_s AS completion, liked,
       CASE WHEN watch_time_s / duration_s > :positive_completion OR liked THEN 'positive'
            WHEN watch_time_s < :negative_watch_s OR watch_time_s / duration_s < :negative_completion THEN 'negative'
            ELSE 'neutral' END AS label
FROM (
    SELECT user_id, item_id,
           count(*) AS events,
           CAST(sum(CAST(watch_time_s AS DECIMAL(18, 3))) AS DOUBLE) AS watch_time_s,
           max(duration_s) AS duration_s,
           bool_or(liked) AS liked
    FROM events
    GROUP BY user_id, item_id
) agg

-- name: pair_interactions
-- Phase 1b: drop neutral rows and clients whose positive share Pos / (Pos + Neg) is too high.
SELECT l.user_id, l.item_id, l.label, l.events, l.watch_time_s, l.completion, l.liked
FROM labeled l
JOIN (
    SELECT user_id,
           count(CASE WHEN label = 'positive' THEN 1 END) AS n_pos,
           count(*) AS n_labeled
    FROM labeled
    WHERE label <> 'neutral'
    GROUP BY user_id
) c ON l.user_id = c.user_id
WHERE l.label <> 'neutral'
  AND CAST(c.n_pos AS DOUBLE) / c.n_labeled <= :max_positive_share

-- name: labeled_stats
SELECT count(*) AS interactions_aggregated,
       count(CASE WHEN label = 'neutral' THEN 1 END) AS removed_neutral,
       count(CASE WHEN label <> 'neutral' THEN 1 END) AS labeled_rows,
       count(DISTINCT CASE WHEN label <> 'neutral' THEN user_id END) AS labeled_clients
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
    SELECT item_id, count(*) AS interactions, count(DISTINCT user_id) AS clients
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
ORDER BY item_id

-- name: pair_items_quarantine
SELECT item_id, interactions, clients, 'unknown item_id' AS reason
FROM interaction_items
WHERE NOT known
ORDER BY item_id

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

-- name: candidate_pairs
-- Phase 3c: positive pairs share a client, negative pairs a (client, session); item1 < item2 rules out
-- self and mirrored pairs; num_clients counts distinct clients.
SELECT item1, item2, pair_type, count(*) AS num_clients
FROM (
    SELECT a.item_id AS item1, b.item_id AS item2, 'positive' AS pair_type, a.user_id
    FROM positives a
    JOIN positives b ON a.user_id = b.user_id AND a.item_id < b.item_id
    UNION ALL
    SELECT DISTINCT a.item_id AS item1, b.item_id AS item2, 'negative' AS pair_type, a.user_id
    FROM negative_sessions a
    JOIN negative_sessions b ON a.user_id = b.user_id AND a.session_id = b.session_id AND a.item_id < b.item_id
) pair_clients
GROUP BY item1, item2, pair_type

-- name: candidate_stats
SELECT pair_type, count(*) AS candidates, count(CASE WHEN num_clients >= :min_clients THEN 1 END) AS kept
FROM candidate_pairs
GROUP BY pair_type
ORDER BY pair_type

-- name: pairs
SELECT item1, item2, pair_type, num_clients
FROM candidate_pairs
WHERE num_clients >= :min_clients
ORDER BY item1, item2, CASE WHEN pair_type = 'negative' THEN 0 ELSE 1 END

-- name: pair_interactions_sorted
SELECT * FROM pair_interactions ORDER BY user_id, item_id
