//! The Lua scripts that make publish and read atomic on the Redis side.
//!
//! Publishing must append to the log and notify live subscribers as one step (a subscriber that
//! attaches, then reads the log, must find every event either in the log or on its feed), and
//! must hand out offsets without gaps across every instance: one script does the epoch check,
//! the INCR, the XADD with the trims and the (S)PUBLISH, and Redis runs it atomically.
//!
//! Times come from Redis's `TIME`, so every instance ages events by the same clock.

use redis::Script;

/// Shared Lua helpers, prepended to the scripts that need them.
const HELPERS: &str = r#"
-- Returns the epoch, creating it with the caller's fresh value when Redis has none (it restarted
-- empty or was flushed). Atomic inside a script, so two instances can never both create one.
local function get_epoch(key, fresh)
  local e = redis.call('GET', key)
  if e then return e end
  redis.call('SET', key, fresh)
  return fresh
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function id_offset(id)
  return tonumber(string.match(id, '^(%d+)'))
end

-- Entry fields are written in the order n, d, t: the time is the 6th.
local function entry_time(entry)
  return tonumber(entry[2][6])
end

-- Drops the events older than max_age ms. The log is ordered by offset, and times grow with
-- offsets, so a binary search over offsets finds the first event to keep in O(log n) lookups.
local function trim_age(log, max_age, now)
  if max_age <= 0 then return end
  local cutoff = now - max_age
  local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  if #oldest == 0 or entry_time(oldest[1]) >= cutoff then return end
  local newest = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
  -- Invariant: the entry at lo is expired; every entry at or above hi is kept.
  local lo = id_offset(oldest[1][1])
  local hi = id_offset(newest[1][1]) + 1
  if entry_time(newest[1]) < cutoff then
    lo = hi - 1
  end
  while hi - lo > 1 do
    local mid = math.floor((lo + hi) / 2)
    local e = redis.call('XRANGE', log, string.format('%d-0', mid), '+', 'COUNT', 1)
    if entry_time(e[1]) < cutoff then lo = id_offset(e[1][1]) else hi = mid end
  end
  redis.call('XTRIM', log, 'MINID', string.format('%d-0', hi))
end
"#;

/// KEYS: epoch, seq, log. ARGV: fresh epoch, name, data, retention count, retention age ms
/// (0: none), channel, publish command (`SPUBLISH` or `PUBLISH`).
/// Returns `{epoch, offset}`.
const PUBLISH: &str = r#"
local epoch = get_epoch(KEYS[1], ARGV[1])
local offset = redis.call('INCR', KEYS[2])
if offset == 1 and redis.call('EXISTS', KEYS[3]) == 1 then
  -- The counter is gone but the log is not (an eviction policy other than noeviction): go on
  -- after the log's last id, so an offset is never handed out twice.
  local info = redis.call('XINFO', 'STREAM', KEYS[3])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then offset = id_offset(info[i + 1]) + 1 end
  end
  redis.call('SET', KEYS[2], string.format('%d', offset))
end
local now = now_ms()
local off = string.format('%d', offset)
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[4], off .. '-0', 'n', ARGV[2], 'd', ARGV[3], 't', now)
trim_age(KEYS[3], tonumber(ARGV[5]), now)
redis.call(ARGV[7], ARGV[6],
  epoch .. '\n' .. off .. '\n' .. string.format('%d', now) .. '\n' .. ARGV[2] .. '\n' .. ARGV[3])
return {epoch, off}
"#;

/// KEYS: epoch, seq, log. ARGV: fresh epoch, first id to return (`<after + 1>-0`), limit,
/// retention age ms (0: none).
/// Returns `{epoch, head, first, offset1, name1, data1, time1, offset2, ...}`.
const READ: &str = r#"
local epoch = get_epoch(KEYS[1], ARGV[1])
trim_age(KEYS[3], tonumber(ARGV[4]), now_ms())
local head = redis.call('GET', KEYS[2]) or '0'
local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
local first
if #oldest == 0 then
  first = string.format('%d', tonumber(head) + 1)
else
  first = string.match(oldest[1][1], '^(%d+)')
end
local out = {epoch, head, first}
local limit = tonumber(ARGV[3])
if limit > 0 then
  local entries = redis.call('XRANGE', KEYS[3], ARGV[2], '+', 'COUNT', limit)
  for _, e in ipairs(entries) do
    local f = e[2]
    out[#out + 1] = string.match(e[1], '^(%d+)')
    out[#out + 1] = f[2]
    out[#out + 1] = f[4]
    out[#out + 1] = f[6]
  end
end
return out
"#;

/// KEYS: epoch. ARGV: fresh epoch. Returns the epoch.
const EPOCH: &str = r#"
return get_epoch(KEYS[1], ARGV[1])
"#;

/// The compiled scripts (`redis::Script` sends EVALSHA and loads the script again when Redis
/// forgot it, e.g. after a restart).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) read: Script,
    pub(crate) epoch: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            publish: Script::new(&format!("{HELPERS}{PUBLISH}")),
            read: Script::new(&format!("{HELPERS}{READ}")),
            epoch: Script::new(&format!("{HELPERS}{EPOCH}")),
        }
    }
}
