-- One day's counts per publisher, UTC hour, event type and device, channels
-- summed (bots included, as in `aggregates`): whole UTC days at hour
-- resolution, from which a day in any timezone can be cut. Placeholder: {{date}}.
SELECT DATE '{{date}}' AS date,
       window_start,
       publisher,
       event_type,
       device,
       SUM(events) AS events
FROM aggregates
WHERE dt = '{{date}}'
GROUP BY window_start, publisher, event_type, device
ORDER BY publisher, window_start, event_type, device
