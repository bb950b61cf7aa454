-- SQI score, stage 2 of 2 (SQI.md "Eligibility" to "Score"), over the table
-- `inputs` that stage 1 produced. Placeholders: {{date}}, {{provisional_after}}
-- (date - 28 days). SQI engine runs it single-partitioned over inputs sorted
-- by publisher, so floating-point sums happen in one fixed order and reruns
-- are bit-identical. Every join names its smaller input first: SQI engine
-- runs this without join reordering, building each hash table from the left
-- input (without row counts for the CTEs DataFusion's reordering put all
-- publishers on the build side of both joins in `final`).
WITH base AS (
    SELECT publisher, category, pageviews, shares, clickbacks, first_day,
           pageviews >= 1000 AS eligible
    FROM inputs
),
category_sizes AS (
    SELECT category, COUNT(*) AS eligible_count
    FROM base WHERE eligible
    GROUP BY category
),
-- A publisher's peer group: its category when that has at least 30 eligible
-- publishers, else the whole network. Keys are prefixed so that a category
-- literally named 'network' cannot be confused with the network group.
assigned AS (
    SELECT b.*,
           CASE WHEN COALESCE(c.eligible_count, 0) >= 30 THEN 'category:' || b.category
                ELSE 'network' END AS group_key
    FROM category_sizes c RIGHT JOIN base b ON b.category = c.category
),
-- Group membership: every eligible publisher belongs to the network group, and
-- to its category group when that group exists.
members AS (
    SELECT publisher, 'network' AS group_key, pageviews, shares, clickbacks
    FROM assigned WHERE eligible
    UNION ALL
    SELECT publisher, group_key, pageviews, shares, clickbacks
    FROM assigned WHERE eligible AND group_key <> 'network'
),
pooled AS (
    SELECT group_key,
           COUNT(*) AS peer_count,
           CAST(SUM(shares) AS DOUBLE) / CAST(GREATEST(SUM(pageviews), 1) AS DOUBLE) AS m1,
           CAST(SUM(clickbacks) AS DOUBLE) / CAST(GREATEST(SUM(shares), 1) AS DOUBLE) AS m2,
           CAST(SUM(clickbacks) AS DOUBLE) / CAST(GREATEST(SUM(pageviews), 1) AS DOUBLE) AS m3
    FROM members
    GROUP BY group_key
),
spread AS (
    SELECT m.group_key,
           VAR_POP(CAST(m.shares AS DOUBLE) / CAST(GREATEST(m.pageviews, 1) AS DOUBLE))
             - AVG(p.m1 / CAST(GREATEST(m.pageviews, 1) AS DOUBLE)) AS v1,
           VAR_POP(CAST(m.clickbacks AS DOUBLE) / CAST(GREATEST(m.shares, 1) AS DOUBLE))
             - AVG(p.m2 / CAST(GREATEST(m.shares, 1) AS DOUBLE)) AS v2,
           VAR_POP(CAST(m.clickbacks AS DOUBLE) / CAST(GREATEST(m.pageviews, 1) AS DOUBLE))
             - AVG(p.m3 / CAST(GREATEST(m.pageviews, 1) AS DOUBLE)) AS v3
    FROM pooled p JOIN members m ON m.group_key = p.group_key
    GROUP BY m.group_key
),
priors AS (
    SELECT p.group_key, p.peer_count,
           p.m1 * b1 AS alpha1, b1 AS beta1,
           p.m2 * b2 AS alpha2, b2 AS beta2,
           p.m3 * b3 AS alpha3, b3 AS beta3
    FROM pooled p JOIN (
        SELECT group_key,
               CASE WHEN v1 <= 0 THEN 1e12 ELSE m1 / v1 END AS b1,
               CASE WHEN v2 <= 0 THEN 1e12 ELSE m2 / v2 END AS b2,
               CASE WHEN v3 <= 0 THEN 1e12 ELSE m3 / v3 END AS b3
        FROM spread JOIN pooled USING (group_key)
    ) b ON p.group_key = b.group_key
),
member_rates AS (
    SELECT m.publisher, m.group_key,
           (m.shares + r.alpha1) / (m.pageviews + r.beta1) AS r1,
           (m.clickbacks + r.alpha2) / (m.shares + r.beta2) AS r2,
           (m.clickbacks + r.alpha3) / (m.pageviews + r.beta3) AS r3
    FROM priors r JOIN members m ON m.group_key = r.group_key
),
ordered AS (
    SELECT group_key, r1, r2, r3,
           ROW_NUMBER() OVER (PARTITION BY group_key ORDER BY r1, publisher) AS n1,
           ROW_NUMBER() OVER (PARTITION BY group_key ORDER BY r2, publisher) AS n2,
           ROW_NUMBER() OVER (PARTITION BY group_key ORDER BY r3, publisher) AS n3,
           COUNT(*) OVER (PARTITION BY group_key) AS cnt
    FROM member_rates
),
-- Medians: the middle value, or the mean of the two middle values. Row n is
-- a middle one when cnt <= 2n <= cnt + 2 (no division, so engines that divide
-- integers exactly, like DuckDB, agree).
medians AS (
    SELECT group_key,
           AVG(CASE WHEN 2 * n1 BETWEEN cnt AND cnt + 2 THEN r1 END) AS med1,
           AVG(CASE WHEN 2 * n2 BETWEEN cnt AND cnt + 2 THEN r2 END) AS med2,
           AVG(CASE WHEN 2 * n3 BETWEEN cnt AND cnt + 2 THEN r3 END) AS med3
    FROM ordered
    GROUP BY group_key
),
-- A zero rate or median enters the logarithm as 1e-12.
scored AS (
    SELECT r.publisher, r.group_key,
           (  LN((CASE WHEN r.r1 = 0 THEN 1e-12 ELSE r.r1 END) / (CASE WHEN d.med1 = 0 THEN 1e-12 ELSE d.med1 END))
            + LN((CASE WHEN r.r2 = 0 THEN 1e-12 ELSE r.r2 END) / (CASE WHEN d.med2 = 0 THEN 1e-12 ELSE d.med2 END))
            + LN((CASE WHEN r.r3 = 0 THEN 1e-12 ELSE r.r3 END) / (CASE WHEN d.med3 = 0 THEN 1e-12 ELSE d.med3 END))
           ) / 3.0 AS z
    FROM medians d JOIN member_rates r ON r.group_key = d.group_key
),
-- BIGINT throughout, so that the rounding below is integer arithmetic: an
-- unsigned RANK() mixed with a signed count would otherwise widen to DECIMAL,
-- whose division does not truncate.
ranked AS (
    SELECT publisher, group_key, z,
           CAST(RANK() OVER (PARTITION BY group_key ORDER BY z) AS BIGINT) - 1 AS below,
           CAST(COUNT(*) OVER (PARTITION BY group_key, z) AS BIGINT) AS equal
    FROM scored
),
-- SQI = clamp(round_half_even(200 q), 1, 200) with q = (below + equal / 2) / n,
-- done in integers: 200 q = 100 (2 below + equal) / n, whose whole part is
-- (numerator - remainder) / n, an exact division in any engine.
final AS (
    SELECT a.publisher, a.category, a.group_key, p.peer_count,
           a.pageviews, a.shares, a.clickbacks, a.eligible, a.first_day,
           (a.shares + p.alpha1) / (a.pageviews + p.beta1) AS share_rate,
           (a.clickbacks + p.alpha2) / (a.shares + p.beta2) AS clickback_rate,
           (a.clickbacks + p.alpha3) / (a.pageviews + p.beta3) AS social_traffic_ratio,
           k.z,
           CAST(100 * (2 * k.below + k.equal) AS BIGINT) AS twice_q_numerator
    -- Every publisher of `assigned`, with its group's prior and its rank.
    FROM priors p
    RIGHT JOIN (
        ranked k RIGHT JOIN assigned a
            ON a.publisher = k.publisher AND a.group_key = k.group_key
    ) ON a.group_key = p.group_key
)
SELECT DATE '{{date}}' AS date,
       publisher,
       category,
       CASE WHEN group_key = 'network' THEN 'network' ELSE category END AS peer_group,
       peer_count,
       pageviews,
       shares,
       clickbacks,
       share_rate,
       clickback_rate,
       social_traffic_ratio,
       CASE WHEN eligible THEN z END AS score_z,
       CASE WHEN eligible THEN CAST(
           LEAST(200, GREATEST(1,
               (twice_q_numerator - twice_q_numerator % peer_count) / peer_count
               + CASE WHEN 2 * (twice_q_numerator % peer_count) > peer_count THEN 1
                      WHEN 2 * (twice_q_numerator % peer_count) = peer_count
                           AND ((twice_q_numerator - twice_q_numerator % peer_count) / peer_count) % 2 = 1
                      THEN 1
                      ELSE 0 END)) AS INTEGER)
       END AS sqi,
       CASE WHEN eligible THEN NULL ELSE 'insufficient_pageviews' END AS reason,
       COALESCE(first_day > DATE '{{provisional_after}}', false) AS provisional,
       1 AS sqi_version
FROM final
ORDER BY publisher
