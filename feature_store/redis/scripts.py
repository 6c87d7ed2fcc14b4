"""The Lua scripts of the Redis store: each touches the keys of one slot (one customer, or one
identifier), so it runs the same on one server and on a cluster.

Times come from the server's clock (`TIME`), in Unix milliseconds, so writers on hosts with
skewed clocks agree on what is inside the dedup window. Scripts need Redis 7.0 or newer for
their `#!lua` line: it declares what a script does, so Redis refuses a writing script before it
starts when memory is full, and runs the read-only ones (`no-writes`) even then. Redis does not
roll a script back; the writing scripts check everything before their first write, so a refused
or failed check leaves nothing behind.

The merge of one customer into another (see `feature_store.redis.identity`) is the only
operation over two slots; its steps are `INTEND_MERGE` (survivor), `MOVE_OUT` (absorbed),
`MERGE_IN` (survivor, exactly once), then the intent's removal, and each is safe to repeat.
"""

from __future__ import annotations

_NOW = """local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""


#: The dedup window of a customer (`rp:{<c>}:d`), format 2: a hash of time buckets, each field
#: the bucket's expiry (Unix ms, a multiple of an eighth of the window, rounded up) and each
#: value the 8-byte digests (the first 8 bytes of the SHA-1 of the event id) of the ids
#: accepted into it, concatenated. An id is remembered from its acceptance until its bucket
#: expires: at least the window, at most an eighth more. Format 1 (a sorted set, event id ->
#: expiry) is read too, and rewritten as buckets by the next write.
_DEDUP = """local function dedup_digest(id)
  return (redis.sha1hex(id):sub(1, 16):gsub('..', function(pair)
    return string.char(tonumber(pair, 16))
  end))
end
local function dedup_live(key, now)
  local live = {}
  if redis.call('TYPE', key).ok == 'zset' then
    for _, id in ipairs(redis.call('ZRANGE', key, '(' .. now, '+inf', 'BYSCORE')) do
      live[dedup_digest(id)] = true
    end
    return live
  end
  local buckets = redis.call('HGETALL', key)
  for i = 1, #buckets, 2 do
    if tonumber(buckets[i]) > now then
      local blob = buckets[i + 1]
      for j = 1, #blob, 8 do
        live[blob:sub(j, j + 7)] = true
      end
    end
  end
  return live
end
local function dedup_add(key, now, additions)
  if redis.call('TYPE', key).ok == 'zset' then
    local old = redis.call('ZRANGE', key, '(' .. now, '+inf', 'BYSCORE', 'WITHSCORES')
    redis.call('DEL', key)
    for i = 1, #old, 2 do
      additions[#additions + 1] = {old[i + 1], dedup_digest(old[i])}
    end
  end
  local fields = redis.call('HKEYS', key)
  local latest = 0
  for _, field in ipairs(fields) do
    if tonumber(field) <= now then
      redis.call('HDEL', key, field)
    elseif tonumber(field) > latest then
      latest = tonumber(field)
    end
  end
  for _, addition in ipairs(additions) do
    local expiry = tonumber(addition[1])
    if expiry > now then
      local field = string.format('%d', expiry)
      redis.call('HSET', key, field, (redis.call('HGET', key, field) or '') .. addition[2])
      if expiry > latest then
        latest = expiry
      end
    end
  end
  if latest > 0 then
    redis.call('PEXPIREAT', key, latest)
  end
end
local function dedup_bucket(now, window)
  local width = math.ceil(window / 8)
  return math.ceil((now + window) / width) * width
end
"""

#: KEYS: profile, dedup, alias, pending. ARGV: event ids.
#: Returns {stored profile or nil, {1 if the id is in the dedup window else 0, ...},
#: the customer it was merged into or nil, {customers being merged into it}}.
READ_FOR_UPDATE = f"""#!lua flags=no-writes
{_NOW}{_DEDUP}local live = dedup_live(KEYS[2], now)
local known = {{}}
for i, event_id in ipairs(ARGV) do
  known[i] = live[dedup_digest(event_id)] and 1 or 0
end
return {{redis.call('GET', KEYS[1]), known, redis.call('GET', KEYS[3]),
  redis.call('SMEMBERS', KEYS[4])}}
"""

#: KEYS: profile, events, dedup, alias, pending, the customer's event-log index, then its log
#: shard's event stream and counters.
#: ARGV: expected version (SHA-1 hex of the stored profile, '' if none), new profile ('' to
#: keep it), dedup window (ms), event log cap, the customer, then (event id, log entry, status)
#: triples.
#: Returns 1 when committed, 0 on a conflict (another writer committed first, the customer was
#: merged into another, or a merge into it is under way): nothing written.
#: Each logged event is also appended to the shard's stream, under the shard's next seq, and
#: that seq to the customer's index: in the commit, so the log holds every accepted event. The
#: appends come first: `XADD` refuses an ID not above the stream's last, so should the counter
#: ever lag behind its stream, the commit fails having written nothing but a gap in the seqs.
COMMIT = f"""#!lua
if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('SCARD', KEYS[5]) > 0 then
  return 0
end
local current = redis.call('GET', KEYS[1])
local version = current and redis.sha1hex(current) or ''
if version ~= ARGV[1] then
  return 0
end
{_NOW}{_DEDUP}local live = dedup_live(KEYS[3], now)
for i = 6, #ARGV, 3 do
  if live[dedup_digest(ARGV[i])] then
    return 0
  end
end
local seq = redis.call('HINCRBY', KEYS[8], 'e', (#ARGV - 5) / 3) - (#ARGV - 5) / 3
for i = 6, #ARGV, 3 do
  seq = seq + 1
  redis.call('XADD', KEYS[7], string.format('%d-0', seq), 'c', ARGV[5], 's', ARGV[i + 2],
    'b', ARGV[i + 1])
  redis.call('RPUSH', KEYS[6], seq)
end
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2])
end
local digests = {{}}
for i = 6, #ARGV, 3 do
  digests[#digests + 1] = dedup_digest(ARGV[i])
  redis.call('RPUSH', KEYS[2], ARGV[i + 1])
end
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
dedup_add(KEYS[3], now, {{{{dedup_bucket(now, tonumber(ARGV[3])), table.concat(digests)}}}})
return 1
"""

#: KEYS: the population counters. ARGV: (field, increment) pairs.
COUNT_POPULATION = """#!lua
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""

#: KEYS: alias, profile, identities, decisions, the customer's decision-log index, then its log
#: shard's decision stream and counters.
#: ARGV: decision id, TTL (ms), the customer, decided at (Unix microseconds), the decision as
#: stored.
#: Appends the decision to the shard's stream unless the customer's index holds its id already,
#: and indexes the decision under a customer the store holds something of. Returns
#: {'alias', survivor} if the customer was merged (nothing written: the caller logs it there),
#: else {'logged', the seq it was appended under, 0 if it was logged before}.
LOG_DECISION = f"""#!lua
local alias = redis.call('GET', KEYS[1])
if alias then
  return {{'alias', alias}}
end
local seq = 0
if redis.call('HEXISTS', KEYS[5], ARGV[1]) == 0 then
  seq = redis.call('HINCRBY', KEYS[7], 'd', 1)
  redis.call('XADD', KEYS[6], string.format('%d-0', seq), 'c', ARGV[3], 't', ARGV[4],
    'b', ARGV[5])
  redis.call('HSET', KEYS[5], ARGV[1], seq)
end
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then
  {_NOW}  local expiry = now + tonumber(ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  redis.call('ZADD', KEYS[4], expiry, ARGV[1])
  redis.call('PEXPIREAT', KEYS[4], expiry)
end
return {{'logged', seq}}
"""

#: KEYS: the customer's decision-log index, its shard's decision stream. ARGV: decision id, seq.
#: Takes back a decision appended under `seq` (its id turned out to be another decision's).
UNLOG_DECISION = """#!lua
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return redis.call('XDEL', KEYS[2], ARGV[2] .. '-0')
end
return 0
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

#: KEYS: the 6 outgoing keys. Returns {profile or nil, {log entries}, {dedup bucket expiry,
#: its digests in hex, ...}, {identity references}, {decision id, expiry, ...}, {merged
#: customers}}.
READ_OUTGOING = f"""#!lua flags=no-writes
{_DEDUP}local buckets = {{}}
local function hex(blob)
  return (blob:gsub('.', function(c) return string.format('%02x', c:byte()) end))
end
if redis.call('TYPE', KEYS[3]).ok == 'zset' then
  local old = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
  for i = 1, #old, 2 do
    buckets[#buckets + 1] = old[i + 1]
    buckets[#buckets + 1] = hex(dedup_digest(old[i]))
  end
else
  local stored = redis.call('HGETALL', KEYS[3])
  for i = 1, #stored, 2 do
    buckets[#buckets + 1] = stored[i]
    buckets[#buckets + 1] = hex(stored[i + 1])
  end
end
return {{redis.call('GET', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1), buckets,
  redis.call('SMEMBERS', KEYS[4]), redis.call('ZRANGE', KEYS[5], 0, -1, 'WITHSCORES'),
  redis.call('SMEMBERS', KEYS[6])}}
"""

#: KEYS: the survivor's profile, events, dedup, identities, decisions, merged, pending, alias.
#: ARGV: expected version (as COMMIT), merged profile ('' to keep), the absorbed customer, event
#: log cap, JSON {"dedup": [[bucket expiry, hex digests]], "decisions": [[id, expiry]],
#: "identities": [...],
#: "merged": [...]}, then the absorbed log's (event id, entry) pairs, oldest first.
#: Returns 1 when applied, 2 if there is nothing to apply (applied before: the absorbed customer
#: is in the merged set; or the intent was withdrawn), 0 on a conflict. The intent stays
#: pending until the caller has deleted the outgoing keys. Entries whose id the survivor holds
#: in its dedup window are not logged twice.
MERGE_IN = f"""#!lua
{_DEDUP}
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
local live = dedup_live(KEYS[3], now)
for i = 6, #ARGV, 2 do
  if not live[dedup_digest(ARGV[i])] then
    redis.call('RPUSH', KEYS[2], ARGV[i + 1])
  end
end
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
local additions = {{}}
for _, bucket in ipairs(moved.dedup) do
  additions[#additions + 1] = {{bucket[1], (bucket[2]:gsub('..', function(pair)
    return string.char(tonumber(pair, 16))
  end))}}
end
dedup_add(KEYS[3], now, additions)
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

#: KEYS: the customer's event-log and decision-log indexes, its log shard's event and decision
#: streams, then every other key of the customer. Deletes the customer's log entries (found
#: through the indexes) and every key of the customer, atomically, so that no commit can add an
#: entry in between. Returns how many entries and keys were deleted.
FORGET_CUSTOMER = """#!lua
local removed = 0
local function forget(stream, seqs)
  for first = 1, #seqs, 500 do
    local ids = {}
    for i = first, math.min(first + 499, #seqs) do
      ids[#ids + 1] = seqs[i] .. '-0'
    end
    removed = removed + redis.call('XDEL', stream, unpack(ids))
  end
end
forget(KEYS[3], redis.call('LRANGE', KEYS[1], 0, -1))
forget(KEYS[4], redis.call('HVALS', KEYS[2]))
removed = removed + redis.call('DEL', KEYS[1], KEYS[2])
for i = 5, #KEYS do
  removed = removed + redis.call('DEL', KEYS[i])
end
return removed
"""

#: KEYS: the customer's event list, its event-log index, its decision-log index. ARGV: the
#: highest seq exported of the customer's log shard in the event log, the same in the
#: decision log, then the ids of the exported events that belong in this list.
#: Drops what the offline store now holds: those events from the list, the seqs up to the
#: floors from the indexes. Returns how many events were dropped.
FORGET_EXPORTED = """#!lua
local exported = {}
for i = 3, #ARGV do
  exported[ARGV[i]] = true
end
local dropped = 0
if #ARGV > 2 then
  local kept = {}
  for _, entry in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    local ok, fields = pcall(cjson.decode, entry)
    if ok and exported[fields[1]] then
      dropped = dropped + 1
    else
      kept[#kept + 1] = entry
    end
  end
  if dropped > 0 then
    redis.call('DEL', KEYS[1])
    for first = 1, #kept, 500 do
      redis.call('RPUSH', KEYS[1], unpack(kept, first, math.min(first + 499, #kept)))
    end
  end
end
local floor = tonumber(ARGV[1])
while floor > 0 do
  local head = redis.call('LINDEX', KEYS[2], 0)
  if not head or tonumber(head) > floor then
    break
  end
  redis.call('LPOP', KEYS[2])
end
floor = tonumber(ARGV[2])
if floor > 0 then
  local seqs = redis.call('HGETALL', KEYS[3])
  for i = 1, #seqs, 2 do
    if tonumber(seqs[i + 1]) <= floor then
      redis.call('HDEL', KEYS[3], seqs[i])
    end
  end
end
return dropped
"""

#: KEYS: a lease. ARGV: its holder's token. Releases it if still held by that holder.
RELEASE = """#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: KEYS: a log's order: its blocks and cursors. ARGV: (shard, from, to) triples: the shard's
#: entries with seqs in (from, to] come next, if the shard is ordered up to `from` (else another
#: reader ordered them first: skipped). A block that continues the last one (same shard, next
#: seqs) extends it. Returns the log's last seq.
ORDER_LOG = """#!lua
local last = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
local tail = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
for i = 1, #ARGV, 3 do
  local from, to = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0') == from and to > from then
    local shard, tail_from, tail_to = string.match(tail[1] or '', '^(%d+):(%d+):(%d+)$')
    if shard == ARGV[i] and tonumber(tail_to) == from then
      redis.call('ZREM', KEYS[1], tail[1])
      tail = {string.format('%s:%s:%d', shard, tail_from, to), tail[2]}
    else
      tail = {string.format('%s:%d:%d', ARGV[i], from, to), string.format('%d', last + 1)}
    end
    redis.call('ZADD', KEYS[1], tail[2], tail[1])
    redis.call('HSET', KEYS[2], ARGV[i], to)
    last = last + to - from
  end
end
redis.call('HSET', KEYS[2], 'n', last)
return last
"""

#: KEYS: a log's order: its blocks and cursors. ARGV: a seq, how many blocks at most.
#: Returns {the log's last seq, {block, first seq, ...}}: the block holding the seq (or the last
#: one before it) and the blocks after it, in order.
READ_LOG_ORDER = """#!lua flags=no-writes
local last = redis.call('HGET', KEYS[2], 'n') or '0'
local holding = redis.call('ZRANGE', KEYS[1], ARGV[1], '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, 1,
  'WITHSCORES')
local from = holding[2] or '-inf'
return {last, redis.call('ZRANGE', KEYS[1], from, '+inf', 'BYSCORE', 'LIMIT', 0, ARGV[2],
  'WITHSCORES')}
"""

#: Run on one cluster node, not registered with the client (its keys span many slots). ARGV: a
#: counter field (`e` or `d`), then log shards' counter keys, all in slots of this node.
#: Returns the shards' last seqs in that log, 0 where none.
READ_LOG_COUNTERS = """#!lua flags=no-writes,allow-cross-slot-keys
local counters = {}
for i = 2, #ARGV do
  counters[i - 1] = tonumber(redis.call('HGET', ARGV[i], ARGV[1]) or '0')
end
return counters
"""

#: KEYS: a log shard's counters. ARGV: a counter field (`e` or `d`), a seq.
#: Raises the counter to the seq if it is below (the shard lost writes that were ordered).
RAISE_LOG_COUNTER = """#!lua
if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""

#: Every script, registered by name when the store connects.
NAMES = (
    "READ_FOR_UPDATE",
    "COMMIT",
    "COUNT_POPULATION",
    "LOG_DECISION",
    "UNLOG_DECISION",
    "READ_CUSTOMER",
    "INTEND_MERGE",
    "MOVE_OUT",
    "READ_OUTGOING",
    "MERGE_IN",
    "CLAIM_IDENTITY",
    "REPOINT_IDENTITY",
    "REPOINT_ALIAS",
    "FORGET_IDENTITY",
    "FORGET_CUSTOMER",
    "FORGET_EXPORTED",
    "RELEASE",
    "ORDER_LOG",
    "READ_LOG_ORDER",
    "RAISE_LOG_COUNTER",
)
