"""Lua scripts that make a check-and-set atomic on the server.

Both compare the version stored in the envelope header (codec.VERSION_OFFSET_LUA) with the
version of the value being written, so a slow fill that read an old row can never overwrite a
newer value. KEYS[1] is the cache key, KEYS[2] its lease (same hash slot, see keys.lease).
"""

from __future__ import annotations

from typing import Final

from cache.codec import HEADER_SIZE, MAGIC, VERSION_OFFSET_LUA

_STORED_VERSION = f"""
local function stored_version(key)
  local cur = redis.call('GET', key)
  if cur and string.len(cur) >= {HEADER_SIZE} and string.byte(cur, 1) == {MAGIC} then
    return struct.unpack('>i8', cur, {VERSION_OFFSET_LUA})
  end
  return nil
end
"""

# Fill after a load (cache-aside): only the holder of the lease may fill, and never over a
# newer version. An invalidation deletes the lease, so a fill of data read before it fails.
# ARGV: token, payload, px, version. Returns 1 when stored, 0 when refused.
FILL: Final = (
    _STORED_VERSION
    + """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
local v = stored_version(KEYS[1])
if v and v > tonumber(ARGV[4]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
)

# Write-through after a database commit: store unless a newer version is already cached, and
# drop the lease so in-flight fills that read the old row are refused.
# ARGV: payload, px, version, and "1" to store only over a value already there (a refresh:
# a key an invalidation deleted since the row was read stays deleted, and no fill is killed).
# Returns 1 when stored, 0 when a newer version was kept (or nothing was there to refresh).
WRITE_GUARDED: Final = (
    _STORED_VERSION
    + """
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
local v = stored_version(KEYS[1])
if v and v > tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
)

# Retire a key whose invalidation could not reach Redis when it was made (the outbox's replay):
# a RETIRED envelope at the version the write produced, unless that version (or a newer one)
# is there already; the lease goes too. A DEL would leave no version behind, and a write or
# fill of an older version still on its way would then store what the write replaced.
# ARGV: the retired envelope, px, version. Returns 1 when retired, 0 when a value as new stays.
RETIRE: Final = (
    _STORED_VERSION
    + """
redis.call('DEL', KEYS[2])
local v = stored_version(KEYS[1])
if v and v >= tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
)

# Release a lease only if it is still ours (the load failed).
RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# One step of a clear by pattern (api_stub.management.clear), done inside Redis: the keys a
# SCAN finds never travel to the client and back in an UNLINK (1.2 ms of the API's loop per
# 1,000 keys; 0.3 ms a step with the script). Keys under the system prefix are skipped, and so
# are the members of the set KEYS[1] (the keys the clear deleted first and refilled).
# ARGV: cursor, match, count, system prefix, "1" for a dry run.
# Returns {next cursor, matched, deleted, skipped system keys}.
CLEAR_STEP: Final = """
local found = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local system, dry = ARGV[4], ARGV[5] == '1'
local spared = redis.call('EXISTS', KEYS[1]) == 1
local matched, deleted, skipped = 0, 0, 0
for _, key in ipairs(found[2]) do
  if string.sub(key, 1, #system) == system then
    skipped = skipped + 1
  elseif not (spared and redis.call('SISMEMBER', KEYS[1], key) == 1) then
    matched = matched + 1
    if not dry then deleted = deleted + redis.call('UNLINK', key) end
  end
end
return {found[1], matched, deleted, skipped}
"""
