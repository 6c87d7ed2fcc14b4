"""The Lua scripts of the Redis store: each touches the keys of one customer (one cluster slot).

Times come from the server's clock (`TIME`), in Unix milliseconds, so writers on hosts with
skewed clocks agree on what is inside the dedup window. Scripts need Redis 7.0 or newer for
their `#!lua` line: it declares what a script does, so Redis refuses a writing script before it
starts when memory is full, and runs the read-only one (`no-writes`) even then. Redis does not
roll a script back; the writing scripts check everything before their first write, so a refused
or failed check leaves nothing behind.
"""

from __future__ import annotations

#: KEYS: profile, dedup. ARGV: event ids.
#: Returns {stored profile or nil, {1 if the id is in the dedup window else 0, ...}}.
READ_FOR_UPDATE = """#!lua flags=no-writes
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local known = {}
for i, event_id in ipairs(ARGV) do
  local expiry = redis.call('ZSCORE', KEYS[2], event_id)
  known[i] = (expiry and tonumber(expiry) > now) and 1 or 0
end
return {redis.call('GET', KEYS[1]), known}
"""

#: KEYS: profile, events, dedup.
#: ARGV: expected version (SHA-1 hex of the stored profile, '' if none), new profile ('' to
#: keep it), dedup window (ms), event log cap, then (event id, log entry) pairs.
#: Returns 1 when committed, 0 on a conflict (another writer committed first): nothing written.
COMMIT = """#!lua
local current = redis.call('GET', KEYS[1])
local version = current and redis.sha1hex(current) or ''
if version ~= ARGV[1] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 5, #ARGV, 2 do
  local expiry = redis.call('ZSCORE', KEYS[3], ARGV[i])
  if expiry and tonumber(expiry) > now then
    return 0
  end
end
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2])
end
local expiry = now + tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
for i = 5, #ARGV, 2 do
  redis.call('ZADD', KEYS[3], expiry, ARGV[i])
  redis.call('RPUSH', KEYS[2], ARGV[i + 1])
end
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('PEXPIREAT', KEYS[3], expiry)
return 1
"""

#: KEYS: the population counters. ARGV: (field, increment) pairs.
COUNT_POPULATION = """#!lua
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""
