"""The Lua scripts of the buffer: each one atomic step on the keys of one partition's hash tag.

A script with the ``#!lua`` shebang and no ``allow-oom`` flag is refused up front when Redis is
out of memory, never half-way; the consumer side is ``allow-oom``: flushing frees memory.
"""

from __future__ import annotations

from typing import Final

# Accept: count and enqueue, or refuse the whole write, on one partition's keys only (its
# hash tag), so the step is atomic on a Cluster too; shared by the two scripts below.
# record(limit, ttl, k, a, n): KEYS[1] is the partition's stream, the n counter hashes
# KEYS[k..], the n entries ("member,code,at,times") ARGV[a..]. {1, ids} or {0, backlog}.
_RECORD_FN: Final = """
local function record(limit, ttl, k, a, n)
  local backlog = redis.call('XLEN', KEYS[1])
  if backlog + n > limit then return {0, backlog} end
  local ids = {}
  for i = 1, n do
    local entry, key = ARGV[a + i - 1], KEYS[k + i - 1]
    local member, code, at, times = string.match(entry, '^(%d+),(%a),(%d+),(%d+)$')
    redis.call('HINCRBY', key, code, times)
    local seen = tonumber(redis.call('HGET', key, 's'))
    if not seen or tonumber(at) > seen then redis.call('HSET', key, 's', at) end
    redis.call('PEXPIRE', key, ttl)
    ids[i] = redis.call('XADD', KEYS[1], '*', 'e', entry)
  end
  return {1, ids}
end
"""

# KEYS: the partition's stream, one counter hash per event, then the call's token (last, under
# the same tag). ARGV: the partition's backlog limit, counter ttl ms, the token's lifetime ms,
# then one entry per event. The token makes the call idempotent: the client library resends a
# command once when its reply is lost (a timeout, a dropped connection) although Redis may have
# run it; the resent call finds its token and answers the ids recorded the first time.
RECORD: Final = (
    "#!lua\n"
    + _RECORD_FN
    + """
local token = KEYS[#KEYS]
local held = redis.call('GET', token)
if held then
  local ids = {}
  for id in string.gmatch(held, '[^,]+') do ids[#ids + 1] = id end
  return {1, ids}
end
local done = record(tonumber(ARGV[1]), ARGV[2], 2, 4, #ARGV - 3)
if done[1] == 1 then
  redis.call('SET', token, table.concat(done[2], ','), 'PX', ARGV[3])
end
return done
"""
)

# Record once per idempotency key: the check, the record and the key's write in one step, so
# a crash cannot record without the key (a retry counting twice) or the key without the
# record (a retry answered with events never recorded). KEYS: as RECORD, then the key's hash
# (last, under the same partition's tag). ARGV: limit, counter ttl ms, window ms, fingerprint,
# then the entries. A key already held answers {2, its fingerprint, its ids joined by ','}
# and records nothing; a refused write ({0, backlog}) leaves no key, so its retry may succeed.
RECORD_ONCE: Final = (
    "#!lua\n"
    + _RECORD_FN
    + """
local once = KEYS[#KEYS]
local held = redis.call('HMGET', once, 'f', 'ids')
if held[1] then return {2, held[1], held[2]} end
local done = record(tonumber(ARGV[1]), ARGV[2], 2, 5, #ARGV - 4)
if done[1] == 1 then
  redis.call('HSET', once, 'f', ARGV[4], 'ids', table.concat(done[2], ','))
  redis.call('PEXPIRE', once, ARGV[3])
end
return done
"""
)

# The ordered fetch (see the package docstring) of one partition. KEYS: stream. ARGV: group,
# consumer, count, min idle ms, mode, cursor. Modes: claim (the pending prefix only), resume
# (the pending prefix, else new entries), next (the caller's pending entries after the cursor,
# its last batch, else new; refused while another consumer holds entries).
FETCH: Final = """#!lua flags=allow-oom
local stream, group, me, count, mode = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[5]
local function claimed(ids)
  local out = {}
  for i = 1, #ids, 500 do
    local part = redis.call('XCLAIM', stream, group, me, 0, unpack(ids, i, math.min(i + 499, #ids)))
    for _, e in ipairs(part) do out[#out + 1] = e end
  end
  return {'pending', out}
end
local ids = {}
if mode == 'next' then
  for _, c in ipairs(redis.call('XPENDING', stream, group)[4] or {}) do
    if c[1] ~= me then return {'busy', c[1]} end
  end
  for _, p in ipairs(redis.call('XPENDING', stream, group, '(' .. ARGV[6], '+', count)) do
    ids[#ids + 1] = p[1]
  end
  if #ids > 0 then return claimed(ids) end
else
  local pel = redis.call('XPENDING', stream, group, '-', '+', count)
  for _, p in ipairs(pel) do
    if p[2] ~= me and p[3] < tonumber(ARGV[4]) then break end
    ids[#ids + 1] = p[1]
  end
  if #ids > 0 then return claimed(ids) end
  if #pel > 0 then return {'busy', pel[1][2]} end
  if mode == 'claim' then return {'empty', ''} end
end
local new = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', count, 'STREAMS', stream, '>')
if new then return {'new', new[1][2]} end
local info = redis.call('XINFO', 'STREAM', stream)
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return {'empty', info[i + 1]} end
end
return {'empty', '0-0'}
"""

# Acknowledge, dead-lettering the entries when given an error (fields copied as found), then
# drop the settled prefix with one XTRIM MINID (XDEL costs ~5 us an entry): up to the newest
# id given, never past an entry still pending or not yet delivered. A script, not MULTI:
# Redis refuses MULTI when out of memory, and this is what frees memory.
# KEYS: stream, dead-letter stream. ARGV: group, newest id, error ('' to acknowledge), ids.
SETTLE: Final = """#!lua flags=allow-oom
local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  return am < bm or (am == bm and as < bs)
end
local function after(id)
  local ms, seq = split(id)
  return string.format('%.0f-%.0f', ms, seq + 1)
end
local stream, group, err = KEYS[1], ARGV[1], ARGV[3]
if err ~= '' then
  for i = 4, #ARGV do
    local id = ARGV[i]
    local e = redis.call('XRANGE', stream, id, id)[1]
    local f = {'id', id, 'error', err}
    if e then for j = 1, #e[2] do f[#f + 1] = e[2][j] end end
    redis.call('XADD', KEYS[2], '*', unpack(f))
    redis.call('XDEL', stream, id)
  end
end
for i = 4, #ARGV, 500 do
  redis.call('XACK', stream, group, unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
local cut = after(ARGV[2])
local first = redis.call('XPENDING', stream, group, '-', '+', 1)[1]
if first and before(first[1], cut) then cut = first[1] end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local name, last
  for j = 1, #g, 2 do
    if g[j] == 'name' then name = g[j + 1] end
    if g[j] == 'last-delivered-id' then last = g[j + 1] end
  end
  if name == group and before(after(last), cut) then cut = after(last) end
end
redis.call('XTRIM', stream, 'MINID', cut)
"""

# Re-queue dead-lettered events (either entry form) of one partition to its stream; ids not
# in this dead-letter stream and entries that never parsed stay where they are.
# KEYS: the partition's dead-letter stream, its stream. ARGV: dead-letter ids.
REPLAY: Final = """#!lua
local out = {}
for i = 1, #ARGV do
  local id = ARGV[i]
  local e = redis.call('XRANGE', KEYS[1], id, id)[1]
  if e then
    local f = {}
    for j = 1, #e[2], 2 do f[e[2][j]] = e[2][j + 1] end
    local entry = f.e
    if not entry and f.m and f.k and f.t and f.n then
      entry = f.m .. ',' .. f.k .. ',' .. f.t .. ',' .. f.n
    end
    if entry and string.match(entry, '^%d+,[lcp],%d+,%d+$') then
      out[#out + 1] = redis.call('XADD', KEYS[2], '*', 'e', entry)
      redis.call('XDEL', KEYS[1], id)
    end
  end
end
return out
"""
