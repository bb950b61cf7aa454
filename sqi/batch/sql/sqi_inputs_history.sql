-- SQI inputs, stage 1 of 2 (SQI.md "Inputs" and "Flags").
-- One row per publisher with any aggregate row in the 28-day window W ending on
-- {{date}}: exact integer sums over W with bot rows excluded, its category, and
-- its first day. Placeholders: {{date}}, {{window_from}} (date - 27 days),
-- {{next_day}} (date + 1 day).
-- One pass over the history up to {{date}} gives both the window's sums and
-- each publisher's first day. The batch runs this form when its own tables
-- cannot stand in for the history (see sqi_inputs.sql); the two give the same rows.
WITH totals AS (
    SELECT publisher,
           COALESCE(SUM(events) FILTER (WHERE counted AND event_type = 'pageview'), 0) AS pageviews,
           COALESCE(SUM(events) FILTER (WHERE counted AND event_type = 'share'), 0) AS shares,
           COALESCE(SUM(events) FILTER (WHERE counted AND event_type = 'clickback'), 0) AS clickbacks,
           BOOL_OR(in_window) AS seen_in_window,
           CAST(MIN(window_start) AS DATE) AS first_day
    FROM (
        SELECT publisher, event_type, events, window_start, in_window,
               in_window AND device <> 'bot' AS counted
        FROM (
            SELECT publisher, event_type, device, events, window_start,
                   window_start >= TIMESTAMP '{{window_from}}T00:00:00Z' AS in_window
            FROM aggregates
            WHERE dt <= '{{date}}' AND window_start < TIMESTAMP '{{next_day}}T00:00:00Z'
        ) history
    ) flagged
    GROUP BY publisher
),
dimension AS (
    SELECT publisher, MIN(category) AS category, MIN(CAST(created_at AS DATE)) AS created_day
    FROM publishers
    GROUP BY publisher
)
SELECT t.publisher,
       COALESCE(NULLIF(d.category, ''), 'uncategorized') AS category,
       t.pageviews,
       t.shares,
       t.clickbacks,
       LEAST(COALESCE(t.first_day, d.created_day), COALESCE(d.created_day, t.first_day)) AS first_day
FROM totals t
LEFT JOIN dimension d ON t.publisher = d.publisher
WHERE t.seen_in_window
ORDER BY t.publisher
