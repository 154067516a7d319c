"""The Redis store's state changes, one Lua script each (atomic: a replica that dies
halfway leaves nothing half done). A message's hash is `PREFIX m:ID`; its `entry` field
names the stream entry that currently stands for it (empty while it waits for a retry),
so a settlement by a replica whose entry was taken over meanwhile changes nothing.
"""

from __future__ import annotations

# KEYS: waiting, stream, message, idem. ARGV: max, id, since, idem ttl (ms), has idem,
# then the message's fields and values. Returns {1, id}, {0, earlier id} or {-1, ''}.
ACCEPT = """
if ARGV[5] == '1' then
  local earlier = redis.call('GET', KEYS[4])
  if earlier then return {0, earlier} end
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return {-1, ''} end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[3], unpack(fields))
local entry = redis.call('XADD', KEYS[2], '*', 'id', ARGV[2])
redis.call('HSET', KEYS[3], 'entry', entry)
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
if ARGV[5] == '1' then
  redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[4])
  redis.call('HSET', KEYS[3], 'idem_key', KEYS[4])
end
return {1, ARGV[2]}
"""

# KEYS: delayed, stream. ARGV: now, limit, prefix. Due retries into the stream.
MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local m = ARGV[3] .. 'm:' .. id
  if redis.call('HGET', m, 'state') == 'pending' then
    local entry = redis.call('XADD', KEYS[2], '*', 'id', id)
    redis.call('HSET', m, 'entry', entry)
  end
end
return #due
"""

# KEYS: stream, message, waiting, delayed, dead. ARGV: kind (delivered, dead, retry,
# release), entry, id, attempts, history, now, due, reason, keep (ms), group.
SETTLE = """
redis.call('XACK', KEYS[1], ARGV[10], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], 'entry') ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[2], 'state') ~= 'pending' then return 0 end
local kind = ARGV[1]
if kind == 'delivered' then
  redis.call('HSET', KEYS[2], 'state', 'delivered', 'attempts', ARGV[4], 'history', ARGV[5],
    'settled', ARGV[6], 'entry', '', 'body', '', 'headers', '')
  redis.call('PEXPIRE', KEYS[2], ARGV[9])
  redis.call('ZREM', KEYS[3], ARGV[3])
elseif kind == 'dead' then
  redis.call('HSET', KEYS[2], 'state', 'dead', 'attempts', ARGV[4], 'history', ARGV[5],
    'settled', ARGV[6], 'reason', ARGV[8], 'entry', '')
  redis.call('ZREM', KEYS[3], ARGV[3])
  redis.call('ZADD', KEYS[5], ARGV[6], ARGV[3])
else
  redis.call('HSET', KEYS[2], 'attempts', ARGV[4], 'history', ARGV[5], 'entry', '')
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[3])
end
return 1
"""

# KEYS: dead, waiting, stream. ARGV: now, prefix, id ('' for the oldest `limit`), limit.
REDRIVE = """
local ids
if ARGV[3] ~= '' then ids = {ARGV[3]} else
  ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1) end
local n = 0
for _, id in ipairs(ids) do
  local m = ARGV[2] .. 'm:' .. id
  if redis.call('ZREM', KEYS[1], id) == 1 and redis.call('HGET', m, 'state') == 'dead' then
    local entry = redis.call('XADD', KEYS[3], '*', 'id', id)
    redis.call('HSET', m, 'state', 'pending', 'attempts', '0', 'since', ARGV[1],
      'entry', entry, 'reason', '', 'settled', '')
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    n = n + 1
  end
end
return n
"""

# KEYS: dead. ARGV: prefix, id. The app's idempotency key goes with the message (as in
# SQLite, where it is a column of the row): sent again, it is a new message.
DELETE = """
if redis.call('ZREM', KEYS[1], ARGV[2]) == 1 then
  local m = ARGV[1] .. 'm:' .. ARGV[2]
  local idem = redis.call('HGET', m, 'idem_key')
  if idem and redis.call('GET', idem) == ARGV[2] then redis.call('DEL', idem) end
  redis.call('DEL', m)
  return 1
end
return 0
"""

SCRIPTS = (
    ("accept", ACCEPT),
    ("move_due", MOVE_DUE),
    ("settle", SETTLE),
    ("redrive", REDRIVE),
    ("delete", DELETE),
)
