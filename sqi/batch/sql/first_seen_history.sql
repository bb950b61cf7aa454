-- Every publisher with an aggregate row up to {{date}} (bots included), with
-- the first day it had one, from the whole hourly history. Placeholders:
-- {{date}}, {{next_day}} (date + 1 day).
SELECT publisher, CAST(MIN(window_start) AS DATE) AS first_day
FROM aggregates
WHERE dt <= '{{date}}' AND window_start < TIMESTAMP '{{next_day}}T00:00:00Z'
GROUP BY publisher
ORDER BY publisher
