-- Every publisher with an aggregate row up to {{date}} (bots included), with
-- the first day it had one: the table as of {{previous_day}} (date - 1 day)
-- and the publishers of {{date}}. Placeholders: {{date}}, {{previous_day}}.
-- The batch runs this form when `first_seen` is complete for
-- {{previous_day}}; otherwise first_seen_history.sql, which gives the same rows.
SELECT publisher, MIN(first_day) AS first_day
FROM (
    SELECT publisher, first_day FROM first_seen WHERE dt = '{{previous_day}}'
    UNION ALL
    SELECT DISTINCT publisher, DATE '{{date}}' AS first_day FROM aggregates WHERE dt = '{{date}}'
) seen
GROUP BY publisher
ORDER BY publisher
