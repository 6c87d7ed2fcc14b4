"""The Lua scripts of the Redis store: each touches the keys of one slot (one customer, or one
identifier), so it runs the same on one server and on a cluster.

Times come from the server's clock (`TIME`), in Unix milliseconds, so writers on hosts with
skewed clocks agree on what is inside the dedup window. Scripts need Redis 7.0 or newer for
their `#!lua` line: it declares what a script does, so Redis refuses a writing script before it
starts when memory is full, and runs the read-only ones (`no-writes`) even then. Redis does not
roll a script back; the writing scripts check everything before their first write, so a refused
or failed check leaves nothing behind.

The merge of one customer into another (see `feature_store.redis_identity`) is the only
operation over two slots; its steps are `INTEND_MERGE` (survivor), `MOVE_OUT` (absorbed),
`MERGE_IN` (survivor, exactly once), then the intent's removal, and each is safe to repeat.
"""

from __future__ import annotations

_NOW = """local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: KEYS: profile, dedup, alias, pending. ARGV: event ids.
#: Returns {stored profile or nil, {1 if the id is in the dedup window else 0, ...},
#: the customer it was merged into or nil, {customers being merged into it}}.
READ_FOR_UPDATE = f"""#!lua flags=no-writes
{_NOW}local known = {{}}
for i, event_id in ipairs(ARGV) do
  local expiry = redis.call('ZSCORE', KEYS[2], event_id)
  known[i] = (expiry and tonumber(expiry) > now) and 1 or 0
end
return {{redis.call('GET', KEYS[1]), known, redis.call('GET', KEYS[3]),
  redis.call('SMEMBERS', KEYS[4])}}
"""

#: KEYS: profile, events, dedup, alias, pending.
#: ARGV: expected version (SHA-1 hex of the stored profile, '' if none), new profile ('' to
#: keep it), dedup window (ms), event log cap, then (event id, log entry) pairs.
#: Returns 1 when committed, 0 on a conflict (another writer committed first, the customer was
#: merged into another, or a merge into it is under way): nothing written.
COMMIT = f"""#!lua
if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('SCARD', KEYS[5]) > 0 then
  return 0
end
local current = redis.call('GET', KEYS[1])
local version = current and redis.sha1hex(current) or ''
if version ~= ARGV[1] then
  return 0
end
{_NOW}for i = 5, #ARGV, 2 do
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

#: KEYS: alias, profile, identities, decisions. ARGV: decision id, TTL (ms).
#: Indexes the decision under a customer the store holds something of; returns the customer
#: it was merged into (the caller indexes it there), else 1 if indexed, 0 if not.
INDEX_DECISION = f"""#!lua
local alias = redis.call('GET', KEYS[1])
if alias then
  return alias
end
if redis.call('EXISTS', KEYS[2], KEYS[3]) == 0 then
  return 0
end
{_NOW}local expiry = now + tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
redis.call('ZADD', KEYS[4], expiry, ARGV[1])
redis.call('PEXPIREAT', KEYS[4], expiry)
return 1
"""

#: KEYS: profile, events, identities, decisions, merged.
#: Returns {profile or nil, {log entries}, {identity references}, {live decision ids},
#: {merged customers}}.
READ_CUSTOMER = f"""#!lua flags=no-writes
{_NOW}return {{redis.call('GET', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1),
  redis.call('SMEMBERS', KEYS[3]), redis.call('ZRANGE', KEYS[4], '(' .. now, '+inf', 'BYSCORE'),
  redis.call('SMEMBERS', KEYS[5])}}
"""

#: KEYS: the survivor's alias, pending. ARGV: the customer to merge into it.
#: Records the intent; returns the customer the survivor was itself merged into, else 0.
INTEND_MERGE = """#!lua
local alias = redis.call('GET', KEYS[1])
if alias then
  return alias
end
redis.call('SADD', KEYS[2], ARGV[1])
return 0
"""

#: KEYS: the absorbed customer's alias, pending, its 6 movable keys (p, e, d, i, x, m), then
#: the 6 outgoing keys they move to. ARGV: the survivor.
#: Points the customer at the survivor and sets its state aside, atomically, so that any later
#: write of the customer follows the alias. Returns {'moved'} (also if already moved there),
#: {'busy'} if merges into it are still pending, {'other', survivor} if it went elsewhere.
MOVE_OUT = """#!lua
local alias = redis.call('GET', KEYS[1])
if alias then
  if alias == ARGV[1] then
    return {'moved'}
  end
  return {'other', alias}
end
if redis.call('SCARD', KEYS[2]) > 0 then
  return {'busy'}
end
redis.call('SET', KEYS[1], ARGV[1])
for i = 3, 8 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 6])
  end
end
return {'moved'}
"""

#: KEYS: the 6 outgoing keys. Returns {profile or nil, {log entries}, {dedup id, expiry, ...},
#: {identity references}, {decision id, expiry, ...}, {merged customers}}.
READ_OUTGOING = """#!lua flags=no-writes
return {redis.call('GET', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1),
  redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES'), redis.call('SMEMBERS', KEYS[4]),
  redis.call('ZRANGE', KEYS[5], 0, -1, 'WITHSCORES'), redis.call('SMEMBERS', KEYS[6])}
"""

#: KEYS: the survivor's profile, events, dedup, identities, decisions, merged, pending, alias.
#: ARGV: expected version (as COMMIT), merged profile ('' to keep), the absorbed customer, event
#: log cap, JSON {"dedup": [[id, expiry]], "decisions": [[id, expiry]], "identities": [...],
#: "merged": [...]}, then the absorbed log's (event id, entry) pairs, oldest first.
#: Returns 1 when applied, 2 if there is nothing to apply (applied before: the absorbed customer
#: is in the merged set; or the intent was withdrawn), 0 on a conflict. The intent stays
#: pending until the caller has deleted the outgoing keys. Entries whose id the survivor holds
#: in its dedup window are not logged twice.
MERGE_IN = f"""#!lua
if redis.call('SISMEMBER', KEYS[6], ARGV[3]) == 1 or redis.call('SISMEMBER', KEYS[7], ARGV[3]) == 0
then
  return 2
end
local current = redis.call('GET', KEYS[1])
local version = current and redis.sha1hex(current) or ''
if version ~= ARGV[1] or redis.call('EXISTS', KEYS[8]) == 1 then
  return 0
end
{_NOW}local moved = cjson.decode(ARGV[5])
local function add_scored(key, pairs)
  for _, pair in ipairs(pairs) do
    if tonumber(pair[2]) > now then
      redis.call('ZADD', key, 'GT', pair[2], pair[1])
    end
  end
  local latest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if latest[2] then
    redis.call('PEXPIREAT', key, latest[2])
  end
end
for i = 6, #ARGV, 2 do
  local expiry = redis.call('ZSCORE', KEYS[3], ARGV[i])
  if not (expiry and tonumber(expiry) > now) then
    redis.call('RPUSH', KEYS[2], ARGV[i + 1])
  end
end
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
add_scored(KEYS[3], moved.dedup)
add_scored(KEYS[5], moved.decisions)
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2])
end
for _, reference in ipairs(moved.identities) do
  redis.call('SADD', KEYS[4], reference)
end
for _, customer in ipairs(moved.merged) do
  redis.call('SADD', KEYS[6], customer)
end
redis.call('SADD', KEYS[6], ARGV[3])
return 1
"""

#: KEYS: an identifier. ARGV: the owner it was read with ('' for none), the new owner, masked
#: form, linked at. Links it unless someone else relinked it since; 1 if linked, else 0.
CLAIM_IDENTITY = """#!lua
local owner = redis.call('HGET', KEYS[1], 'c') or ''
if owner ~= ARGV[1] and owner ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'c', ARGV[2])
redis.call('HSETNX', KEYS[1], 'm', ARGV[3])
redis.call('HSETNX', KEYS[1], 't', ARGV[4])
return 1
"""

#: KEYS: an identifier. ARGV: from, to. Moves it to `to` if it is linked to `from`.
REPOINT_IDENTITY = """#!lua
if redis.call('HGET', KEYS[1], 'c') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'c', ARGV[2])
end
return 1
"""

#: KEYS: a merged customer's alias. ARGV: from, to. Points it at `to` if it points at `from`.
REPOINT_ALIAS = """#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
"""

#: KEYS: an identifier. ARGV: customers. Deletes it if it is linked to one of them; 1 if so.
FORGET_IDENTITY = """#!lua
local owner = redis.call('HGET', KEYS[1], 'c')
for _, customer in ipairs(ARGV) do
  if owner == customer then
    return redis.call('DEL', KEYS[1])
  end
end
return 0
"""

#: KEYS: a lease. ARGV: its holder's token. Releases it if still held by that holder.
RELEASE = """#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: Every script, registered by name when the store connects.
NAMES = (
    "READ_FOR_UPDATE",
    "COMMIT",
    "COUNT_POPULATION",
    "INDEX_DECISION",
    "READ_CUSTOMER",
    "INTEND_MERGE",
    "MOVE_OUT",
    "READ_OUTGOING",
    "MERGE_IN",
    "CLAIM_IDENTITY",
    "REPOINT_IDENTITY",
    "REPOINT_ALIAS",
    "FORGET_IDENTITY",
    "RELEASE",
)
