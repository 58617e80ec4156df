-- Tollgate rate limits for one client key: requests per minute, tokens per minute and
-- concurrency, decided in one atomic step. proxy/ratelimit.py is the only caller and its
-- module docstring explains the model; LocalRateLimiter there mirrors this file line for line.
--
-- KEYS[1]  tg:rl:{<key_id>}:rate   hash: rq_tat, rq_lim, tk_tat, tk_lim
-- KEYS[2]  tg:rl:{<key_id>}:slots  zset: request_id -> slot expiry (µs, server clock)
--
-- ARGV[1] = "acquire": request_id, requests_per_minute, tokens_per_minute (0 = unlimited),
--                      max_concurrency, estimated_tokens, slot_ttl_us
--   returns {allowed, reason, retry_after_s, remaining_requests, reset_requests_us,
--            remaining_tokens, reset_tokens_us}; reason 0 none, 1 requests, 2 tokens,
--            3 concurrency. A refusal writes nothing (expired slots are swept, which
--            changes no live count).
-- ARGV[1] = "release": request_id, tokens_used
--   returns 1 when the slot was held (tokens counted), 0 when it was not (nothing changes).
--
-- Each rate is a GCRA: a theoretical arrival time ("tat", µs) that every admitted unit pushes
-- forward by 60 s / limit and that the clock catches up with. The units still "in the
-- window" are (tat - now) / (60 s / limit); a unit fits when tat + cost stays within
-- now + 60 s. Times come from the Redis server so workers with skewed clocks agree.

local WINDOW_US = 60000000
-- tat is a double near 1.7e15 µs (0.25 µs resolution): allow 1 µs of rounding so that
-- exactly `limit` units fit in an empty window.
local EPSILON_US = 1
local REASON_NONE, REASON_REQUESTS, REASON_TOKENS, REASON_CONCURRENCY = 0, 1, 2, 3
-- Concurrency frees whenever any in-flight request of the key ends; we cannot know when.
local CONCURRENCY_RETRY_US = 1000000

local rate_key, slots_key = KEYS[1], KEYS[2]

local function server_now_us()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- doubles round-trip exactly through %.17g; tostring() would keep only 14 digits.
local function encode(x)
    return string.format('%.17g', x)
end

-- The stored tat, caught up with the clock and rescaled if the key's limit changed since
-- it was written: the units used stay the same and drain at the new rate, so a raised
-- limit applies at once. A lowered one leaves the window at most full (or as long as it
-- already was), never hours of backlog.
local function current_tat(stored_tat, stored_limit, limit, now)
    local tat = tonumber(stored_tat)
    if not tat or tat <= now then
        return now
    end
    local old_limit = tonumber(stored_limit)
    if old_limit and old_limit ~= limit then
        local backlog = tat - now
        return now + math.min(backlog * old_limit / limit, math.max(backlog, WINDOW_US))
    end
    return tat
end

-- Whole units that still fit before tat reaches now + window.
local function remaining(tat, now, interval, limit)
    local r = math.floor((now + WINDOW_US + EPSILON_US - tat) / interval)
    if r < 0 then return 0 end
    if r > limit then return limit end
    return r
end

local function acquire(request_id, rq_limit, tk_limit, max_concurrency, estimated, slot_ttl_us)
    local now = server_now_us()
    local stored = redis.call('HMGET', rate_key, 'rq_tat', 'rq_lim', 'tk_tat', 'tk_lim')

    local rq_interval = WINDOW_US / rq_limit
    local rq_tat = current_tat(stored[1], stored[2], rq_limit, now)
    local rq_new_tat = rq_tat + rq_interval
    local reason, wait = REASON_NONE, 0
    local rq_wait = rq_new_tat - WINDOW_US - now
    if rq_wait > EPSILON_US then
        reason, wait = REASON_REQUESTS, rq_wait
    end

    local tk_interval, tk_tat
    if tk_limit > 0 then
        tk_interval = WINDOW_US / tk_limit
        tk_tat = current_tat(stored[3], stored[4], tk_limit, now)
        -- Room for at least one token, and never more than a whole window: a request larger
        -- than the limit runs alone once the window is empty, then its usage is paid back.
        local need = math.min(math.max(estimated, 1), tk_limit)
        local tk_wait = tk_tat + need * tk_interval - WINDOW_US - now
        if tk_wait > EPSILON_US and tk_wait > wait then
            reason, wait = REASON_TOKENS, tk_wait
        end
    end

    -- Slots of crashed workers expire here; sweeping them changes no live count.
    redis.call('ZREMRANGEBYSCORE', slots_key, '-inf', now)
    if not redis.call('ZSCORE', slots_key, request_id)
        and redis.call('ZCARD', slots_key) >= max_concurrency
        and CONCURRENCY_RETRY_US > wait then
        reason, wait = REASON_CONCURRENCY, CONCURRENCY_RETRY_US
    end

    local allowed, retry_after = 1, 0
    if reason ~= REASON_NONE then
        allowed = 0
        retry_after = math.max(1, math.ceil((wait - EPSILON_US) / 1000000))
    else
        rq_tat = rq_new_tat
        local fields = {'rq_tat', encode(rq_tat), 'rq_lim', rq_limit}
        if tk_limit > 0 then
            table.insert(fields, 'tk_tat')
            table.insert(fields, encode(tk_tat))
            table.insert(fields, 'tk_lim')
            table.insert(fields, tk_limit)
        else
            redis.call('HDEL', rate_key, 'tk_tat', 'tk_lim')
        end
        redis.call('HSET', rate_key, unpack(fields))
        -- Outlive every slot: release reads tk_lim to count the tokens of a running request.
        local horizon = math.max(rq_tat - now, slot_ttl_us)
        if tk_limit > 0 then
            horizon = math.max(horizon, tk_tat - now)
        end
        redis.call('PEXPIRE', rate_key, math.ceil(horizon / 1000) + 1)
        redis.call('ZADD', slots_key, now + slot_ttl_us, request_id)
        redis.call('PEXPIRE', slots_key, math.ceil(slot_ttl_us / 1000) + 1)
    end

    local tk_remaining, tk_reset = -1, -1
    if tk_limit > 0 then
        tk_remaining = remaining(tk_tat, now, tk_interval, tk_limit)
        tk_reset = math.ceil(tk_tat - now)
    end
    return {
        allowed, reason, retry_after,
        remaining(rq_tat, now, rq_interval, rq_limit), math.ceil(rq_tat - now),
        tk_remaining, tk_reset,
    }
end

local function release(request_id, tokens_used)
    -- Only the holder of a live slot counts its tokens, so a second release is a no-op.
    if redis.call('ZREM', slots_key, request_id) == 0 then
        return 0
    end
    if tokens_used <= 0 then
        return 1
    end
    local stored = redis.call('HMGET', rate_key, 'tk_tat', 'tk_lim')
    local tk_limit = tonumber(stored[2])
    if not tk_limit then
        return 1  -- tokens per minute unlimited for this key
    end
    local now = server_now_us()
    local tat = math.max(tonumber(stored[1]) or now, now) + tokens_used * WINDOW_US / tk_limit
    redis.call('HSET', rate_key, 'tk_tat', encode(tat))
    local ttl_ms = math.ceil((tat - now) / 1000) + 1
    if redis.call('PTTL', rate_key) < ttl_ms then
        redis.call('PEXPIRE', rate_key, ttl_ms)
    end
    return 1
end

if ARGV[1] == 'acquire' then
    return acquire(ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
        tonumber(ARGV[6]), tonumber(ARGV[7]))
elseif ARGV[1] == 'release' then
    return release(ARGV[2], tonumber(ARGV[3]))
end
return redis.error_reply('tollgate ratelimit: unknown operation ' .. tostring(ARGV[1]))
