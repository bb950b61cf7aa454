-- One day's totals per publisher, channel, event type and device (bots included,
-- as in `aggregates`). Placeholder: {{date}}.
SELECT DATE '{{date}}' AS date,
       publisher,
       channel,
       event_type,
       device,
       SUM(events) AS events
FROM aggregates
WHERE dt = '{{date}}'
GROUP BY publisher, channel, event_type, device
ORDER BY publisher, channel NULLS FIRST, event_type, device
