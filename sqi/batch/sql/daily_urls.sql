-- One day's totals per publisher, URL and event type (bots included, as in
-- `url_counts`): what the report's top URLs read for whole days.
-- Placeholder: {{date}}.
SELECT DATE '{{date}}' AS date,
       publisher,
       url,
       event_type,
       SUM(events) AS events
FROM url_counts
WHERE dt = '{{date}}'
GROUP BY publisher, url, event_type
ORDER BY publisher, url, event_type
