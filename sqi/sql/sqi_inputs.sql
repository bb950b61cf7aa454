-- SQI inputs, stage 1 of 2 (SQI.md "Inputs" and "Flags").
-- One row per publisher with any aggregate row in the 28-day window W ending on
-- {{date}}: exact integer sums over W with bot rows excluded, its category, and
-- its first day. Placeholders: {{date}}, {{window_from}} (date - 27 days),
-- {{next_day}} (date + 1 day).
WITH window_rows AS (
    SELECT publisher, event_type, device, events
    FROM aggregates
    WHERE dt >= '{{window_from}}' AND dt <= '{{date}}'
      AND window_start >= TIMESTAMP '{{window_from}}T00:00:00Z'
      AND window_start < TIMESTAMP '{{next_day}}T00:00:00Z'
),
totals AS (
    SELECT publisher,
           SUM(CASE WHEN event_type = 'pageview' AND device <> 'bot' THEN events ELSE 0 END) AS pageviews,
           SUM(CASE WHEN event_type = 'share' AND device <> 'bot' THEN events ELSE 0 END) AS shares,
           SUM(CASE WHEN event_type = 'clickback' AND device <> 'bot' THEN events ELSE 0 END) AS clickbacks
    FROM window_rows
    GROUP BY publisher
),
first_seen AS (
    SELECT publisher, CAST(MIN(window_start) AS DATE) AS first_day
    FROM aggregates
    WHERE dt <= '{{date}}'
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
       LEAST(COALESCE(f.first_day, d.created_day), COALESCE(d.created_day, f.first_day)) AS first_day
FROM totals t
LEFT JOIN dimension d ON t.publisher = d.publisher
LEFT JOIN first_seen f ON t.publisher = f.publisher
ORDER BY t.publisher
