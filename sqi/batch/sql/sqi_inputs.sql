-- SQI inputs, stage 1 of 2 (SQI.md "Inputs" and "Flags").
-- One row per publisher with any aggregate row in the 28-day window W ending on
-- {{date}}: exact integer sums over W with bot rows excluded, its category, and
-- its first day. Placeholders: {{date}}, {{window_from}} (date - 27 days),
-- {{previous_day}} (date - 1 day).
-- W's days before {{date}} are read from the batch's own `daily` totals and
-- {{date}} from `aggregates`; the first day comes from `first_seen` as of
-- {{previous_day}}, so no run rereads the hourly history. The batch runs this
-- form when every day of W before {{date}} has complete `daily` files and
-- `first_seen` is complete for {{previous_day}}; otherwise it runs
-- sqi_inputs_history.sql, which gives the same rows.
WITH window_rows AS (
    SELECT publisher, event_type, device, events, date AS day
    FROM daily
    WHERE dt >= '{{window_from}}' AND dt <= '{{previous_day}}'
    UNION ALL
    SELECT publisher, event_type, device, events, DATE '{{date}}' AS day
    FROM aggregates
    WHERE dt = '{{date}}'
),
totals AS (
    SELECT publisher,
           COALESCE(SUM(events) FILTER (WHERE device <> 'bot' AND event_type = 'pageview'), 0) AS pageviews,
           COALESCE(SUM(events) FILTER (WHERE device <> 'bot' AND event_type = 'share'), 0) AS shares,
           COALESCE(SUM(events) FILTER (WHERE device <> 'bot' AND event_type = 'clickback'), 0) AS clickbacks,
           MIN(day) AS first_day_in_window
    FROM window_rows
    GROUP BY publisher
),
seen AS (
    SELECT t.*,
           LEAST(COALESCE(f.first_day, t.first_day_in_window), t.first_day_in_window) AS first_day
    FROM totals t
    LEFT JOIN (SELECT publisher, first_day FROM first_seen WHERE dt = '{{previous_day}}') f
        ON t.publisher = f.publisher
),
dimension AS (
    SELECT publisher, MIN(category) AS category, MIN(CAST(created_at AS DATE)) AS created_day
    FROM publishers
    GROUP BY publisher
)
SELECT s.publisher,
       COALESCE(NULLIF(d.category, ''), 'uncategorized') AS category,
       s.pageviews,
       s.shares,
       s.clickbacks,
       LEAST(COALESCE(s.first_day, d.created_day), COALESCE(d.created_day, s.first_day)) AS first_day
FROM seen s
LEFT JOIN dimension d ON s.publisher = d.publisher
ORDER BY s.publisher
